"""The notification service: tells merchants and customers what happened to their orders."""

"""Customer accounts: registration, password sign-in (OAuth2 password and refresh grants) and the
saved address book an order may name instead of repeating its shipping details."""

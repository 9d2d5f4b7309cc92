"""The order service: the clients' HTTP gateway and the order saga."""

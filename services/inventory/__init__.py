"""The inventory service: merchants, the catalog with prices and stock, and order reservations."""

"""The payment service: authorizes and voids payments through provider adapters."""

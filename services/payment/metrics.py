"""Prometheus metrics of the payment service's dealings with its providers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PROVIDER_CALLS = Counter(
    "payment_provider_calls_total",
    "Calls to payment providers by method, operation (authorize, capture, void, refund, query) and "
    "outcome (the provider's answer; `unavailable`: no usable answer, retried; `rejected`: the provider "
    "refused the request itself; `error`: the adapter failed)",
    ["method", "operation", "outcome"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "payment_provider_call_seconds",
    "Time a provider took to answer one call, failed calls included",
    ["method", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OPERATIONS_IN_FLIGHT = Gauge(
    "payment_operations_in_flight", "Provider operations this process is running now"
)
CALLBACKS_REFUSED = Counter(
    "payment_callbacks_refused_total",
    "Provider callbacks answered 401, by reason: bad_signature, stale, missing_headers, unknown_merchant, "
    "malformed_body, invalid (any other refusal by the adapter) or replayed (a nonce accepted before)",
    ["method", "reason"],
)

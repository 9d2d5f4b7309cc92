"""Prometheus metrics the plumbing records for every service, labelled by service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("events_consumed_total", "Events taken off Kafka", ["service", "topic", "type"])
EVENTS_APPLIED = Counter(
    "events_applied_total", "Events whose handler ran and committed", ["service", "type"]
)
EVENTS_DUPLICATE = Counter(
    "events_duplicate_total", "Redelivered events skipped as already applied", ["service", "type"]
)
EVENTS_DEAD_LETTERED = Counter(
    "events_dead_lettered_total", "Events sent to a dead-letter topic", ["service", "topic"]
)
HANDLER_RETRIES = Counter("handler_retries_total", "Batches retried after a handler error", ["service"])
BATCH_SECONDS = Histogram(
    "consumer_batch_seconds",
    "Time to handle one consumed batch, store writes included",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_PUBLISHED = Counter(
    "events_published_total", "Events the outbox relay published", ["service", "topic"]
)
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog", "Outbox entries seen unpublished by the relay's last pass", ["service"]
)

"""Fraud's faust agents. The first, `route` (shared.faust_app.rekey), re-keys the placed orders on
order.events by customer onto BY_CUSTOMER_TOPIC, so that one customer's velocity lives in one
partition (one worker). The second, `score`, scores each order there once and publishes its
FraudScored on fraud.events. What neither can use goes to order.events.dlq.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter

from services.fraud.handlers import HANDLERS, SERVICE, FraudBatch, customers_to_score
from shared import faust_app, metrics
from shared.contracts import topics
from shared.faust_app import OutboundRecord, Outputs, Route
from shared.kafka import encode, headers_for
from shared.logging import correlation, get_logger

log = get_logger(__name__)

BY_CUSTOMER_TOPIC = "fraud-orders-by-customer"
ROUTE = Route(topics.ORDER_EVENTS, BY_CUSTOMER_TOPIC, customers_to_score)
DEAD_LETTER_TOPIC = ROUTE.dead_letter_topic

FRAUD_DECISIONS = Counter("fraud_decisions_total", "Orders scored, by decision", ["decision"])


async def score(stream: StreamT[bytes], new_batch: Callable[[], FraudBatch], outputs: Outputs) -> None:
    """Score each re-keyed order once against its customer's history and publish the FraudScored."""
    async for event in stream.events():
        message = event.message
        applied = faust_app.apply_record(message, HANDLERS, new_batch, work="fraud scores")
        if isinstance(applied, str):
            await _dead_letter(outputs, message, f"cannot score: {applied}")
            continue
        delivery, batch = applied
        duplicate = delivery.envelope.id in batch.redelivered
        with correlation(delivery.envelope.correlation_id, order_id=delivery.event.subject()):
            for answer in batch.replies.outgoing:
                await outputs.publish(
                    OutboundRecord(answer.subject.encode(), encode(answer), headers_for(answer))
                )
                if not duplicate:
                    FRAUD_DECISIONS.labels(answer.data["decision"]).inc()
                log.info("fraud_scored", decision=answer.data["decision"], duplicate=duplicate)
            counter = metrics.EVENTS_DUPLICATE if duplicate else metrics.EVENTS_APPLIED
            counter.labels(SERVICE, type(delivery.event).TYPE).inc()


async def _dead_letter(outputs: Outputs, message: Any, error: str) -> None:
    await faust_app.dead_letter(
        outputs.dead_letter, message, service=SERVICE, dead_letter_topic=DEAD_LETTER_TOPIC, error=error
    )

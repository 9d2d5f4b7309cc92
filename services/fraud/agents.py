"""Fraud's two faust agents, each a function of its stream and of where its records go.

route: order.events → the placed orders, re-keyed by customer onto BY_CUSTOMER_TOPIC.
score: BY_CUSTOMER_TOPIC → one FraudScored per order on fraud.events.

Both read records through shared.kafka.decode_record, like every other service, and send what they
cannot use to order.events.dlq. They never yield: faust answers whatever a yielding agent yields to
the topic named in a record's `Faust-Ag-ReplyTo` header, which would let the wire pick our outputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter

from services.fraud.handlers import HANDLERS, SERVICE, FraudBatch
from shared import metrics
from shared.contracts import OrderPlaced, topics
from shared.kafka import (
    UNKNOWN_TYPE,
    Delivery,
    Headers,
    PoisonRecord,
    dead_letter_headers,
    decode_record,
    describe,
    encode,
    headers_for,
    record_headers,
)
from shared.logging import correlation, get_logger

log = get_logger(__name__)

# Orders re-keyed by customer, so that one customer's velocity lives in one partition (one worker).
BY_CUSTOMER_TOPIC = "fraud-orders-by-customer"
DEAD_LETTER_TOPIC = topics.dead_letter(topics.ORDER_EVENTS)

FRAUD_DECISIONS = Counter("fraud_decisions_total", "Orders scored, by decision", ["decision"])


@dataclass(frozen=True)
class OutboundRecord:
    key: bytes | None
    value: bytes
    headers: Headers


Send = Callable[[OutboundRecord], Awaitable[None]]


@dataclass(frozen=True)
class Outputs:
    """Where the agents' records go. Each send returns once the record is safely stored, so that
    faust never commits a consumed offset ahead of what was made of it."""

    forward: Send  # a placed order, re-keyed by customer, to BY_CUSTOMER_TOPIC
    publish: Send  # a FraudScored, to fraud.events
    dead_letter: Send  # a record fraud cannot use, to order.events.dlq


async def route(stream: StreamT[bytes], outputs: Outputs) -> None:
    """Pick the placed orders out of order.events and re-key them by customer."""
    async for event in stream.events():
        message = event.message
        try:
            delivery = decode_record(message)
        except PoisonRecord as poison:
            metrics.EVENTS_CONSUMED.labels(SERVICE, message.topic, UNKNOWN_TYPE).inc()
            await dead_letter(outputs, message, f"undecodable record: {poison}")
            continue
        metrics.EVENTS_CONSUMED.labels(SERVICE, message.topic, type(delivery.event).TYPE).inc()
        if isinstance(delivery.event, OrderPlaced):
            await outputs.forward(
                OutboundRecord(delivery.event.customer_id.encode(), message.value, list(delivery.raw_headers))
            )


async def score(stream: StreamT[bytes], new_batch: Callable[[], FraudBatch], outputs: Outputs) -> None:
    """Score each re-keyed order once against its customer's history and publish the FraudScored."""
    async for event in stream.events():
        message = event.message
        batch = new_batch()
        applied = _apply(message, batch)
        if isinstance(applied, str):
            await dead_letter(outputs, message, f"cannot score: {applied}")
            continue
        duplicate = applied.envelope.id in batch.redelivered
        with correlation(applied.envelope.correlation_id, order_id=applied.event.subject()):
            for answer in batch.replies.outgoing:
                await outputs.publish(
                    OutboundRecord(answer.subject.encode(), encode(answer), headers_for(answer))
                )
                if not duplicate:
                    FRAUD_DECISIONS.labels(answer.data["decision"]).inc()
                log.info("fraud_scored", decision=answer.data["decision"], duplicate=duplicate)
            counter = metrics.EVENTS_DUPLICATE if duplicate else metrics.EVENTS_APPLIED
            counter.labels(SERVICE, type(applied.event).TYPE).inc()


def _apply(message: Any, batch: FraudBatch) -> Delivery | str:
    """The delivery in `message`, applied to `batch`; or why fraud cannot score it."""
    try:
        delivery = decode_record(message)
    except PoisonRecord as poison:
        return str(poison)
    if not HANDLERS.handles(delivery):
        return f"fraud scores {OrderPlaced.TYPE} only, not {type(delivery.event).TYPE}"
    try:
        HANDLERS.dispatch(batch, [delivery])
    except Exception as error:  # noqa: BLE001 - one unscorable order must not stop scoring for all
        return describe(error)
    return delivery


async def dead_letter(outputs: Outputs, message: Any, error: str) -> None:
    """Send a consumed record to order.events.dlq with why and where it failed, its headers kept."""
    headers = dead_letter_headers(
        record_headers(message),
        error=error,
        consumer=SERVICE,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    await outputs.dead_letter(OutboundRecord(message.key, message.value or b"", headers))
    metrics.EVENTS_DEAD_LETTERED.labels(SERVICE, DEAD_LETTER_TOPIC).inc()
    log.error("dead_lettered", source_topic=message.topic, source_offset=message.offset, error=error[:500])

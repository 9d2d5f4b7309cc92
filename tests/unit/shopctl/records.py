"""Records as aiokafka hands them to `shopctl events`, for its tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shared.contracts import Envelope, OrderEndReason, OrderRejected
from shared.kafka import encode, headers_for, new_envelope

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """A consumed record: the fields of aiokafka's ConsumerRecord the tools read."""

    value: bytes | None
    key: bytes | None = b"ord-1"
    topic: str = "order.events"
    partition: int = 2
    offset: int = 17
    timestamp: int = int(NOW.timestamp() * 1000)
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=tuple)


def rejected(order_id: str = "ord-1", *, at: datetime = NOW, causation_id: str | None = None) -> Envelope:
    """An order.rejected envelope stamped `at`."""
    event = OrderRejected(
        order_id=order_id,
        order_no="20261126-000001",
        customer_id="cust-1",
        reason=OrderEndReason.OUT_OF_STOCK,
    )
    envelope = new_envelope(event, source="order", correlation_id="corr-7", causation_id=causation_id)
    return envelope.model_copy(update={"time": at})


def record_of(envelope: Envelope, **changes: object) -> Record:
    """The record a producer makes of `envelope`, keyed by its subject, with its CloudEvents headers."""
    record = Record(
        value=encode(envelope), key=envelope.subject.encode(), headers=tuple(headers_for(envelope))
    )
    return replace(record, **changes)  # type: ignore[arg-type]

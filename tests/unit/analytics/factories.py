"""Confirmed orders and their records as analytics receives them."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.contracts import Envelope, Event, OrderConfirmed, OrderLine
from shared.kafka import Headers, encode, headers_for, new_envelope
from tests.unit.samples import T0


def line(merchant_id: str, unit_price_fen: int, quantity: int = 1, sku: str | None = None) -> OrderLine:
    return OrderLine(
        sku=sku or f"sku-{uuid.uuid4().hex[:6]}",
        name="Tea",
        merchant_id=merchant_id,
        quantity=quantity,
        unit_price_fen=unit_price_fen,
    )


def confirmed(*lines: OrderLine, order_id: str | None = None) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id or f"ord-{uuid.uuid4().hex[:8]}",
        order_no="N-1",
        customer_id="cust-1",
        lines=list(lines),
        total_fen=sum(item.line_total_fen for item in lines),
        payment_id="pay-1",
    )


def envelope_of(event: Event, *, at: datetime = T0, correlation_id: str = "corr-1") -> Envelope:
    """`event` as its owner published it at `at` (business time)."""
    return new_envelope(event, source="order", correlation_id=correlation_id).model_copy(update={"time": at})


def record_of(envelope: Envelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of `envelope` as its producer writes it."""
    return envelope.subject.encode(), encode(envelope), headers_for(envelope)

"""Orders and their records as fraud receives them."""

from __future__ import annotations

import uuid
from datetime import datetime

from services.fraud.domain import Rules
from shared.contracts import Envelope, Event, OrderLine, OrderPlaced, PaymentMethod
from shared.kafka import Headers, encode, headers_for, new_envelope
from tests.unit.samples import ADDRESS, T0

# The rules the unit tests score with (the service's defaults, and one blocked customer).
RULES = Rules(
    review_above_fen=2_000_000,
    reject_above_fen=5_000_000,
    velocity_max_orders=5,
    velocity_window_s=600,
    blocked_customers=frozenset({"cust-blocked-demo"}),
)


def placed(
    customer_id: str = "cust-1", total_fen: int = 10_000, *, order_id: str | None = None, at: datetime = T0
) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id or f"ord-{uuid.uuid4().hex[:8]}",
        order_no="N-1",
        customer_id=customer_id,
        lines=[OrderLine(sku="sku-1", name="Tea", merchant_id="m-1", quantity=1, unit_price_fen=total_fen)],
        total_fen=total_fen,
        payment_method=PaymentMethod.ALIPAY,
        shipping_address=ADDRESS,
        placed_at=at,
    )


def envelope_of(event: Event, *, correlation_id: str = "corr-1") -> Envelope:
    return new_envelope(event, source="order", correlation_id=correlation_id)


def record_of(envelope: Envelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of `envelope` as its producer writes it."""
    return envelope.subject.encode(), encode(envelope), headers_for(envelope)

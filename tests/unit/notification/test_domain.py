"""Who is told what about an order, and how it reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.notification.domain import (
    CUSTOMER_ORDER_CANCELLED,
    CUSTOMER_ORDER_CONFIRMED,
    CUSTOMER_ORDER_REJECTED,
    INBOX,
    MERCHANT_NEW_ORDER,
    REASONS,
    Status,
    format_fen,
    notification_id,
    order_cancelled,
    order_confirmed,
    order_rejected,
)
from shared.contracts import OrderCancelled, OrderConfirmed, OrderEndReason, OrderLine, OrderRejected, Role

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def confirmed(*lines: OrderLine) -> OrderConfirmed:
    return OrderConfirmed(
        order_id="o-1",
        order_no="20261125-000001",
        customer_id="c-1",
        lines=list(lines),
        total_fen=sum(line.line_total_fen for line in lines),
        payment_id="p-1",
    )


TEA = OrderLine(sku="TEA-1", name="Longjing tea", merchant_id="m-1", quantity=2, unit_price_fen=8800)
CUP = OrderLine(sku="CUP-1", name="Celadon cup", merchant_id="m-2", quantity=1, unit_price_fen=4550)
POT = OrderLine(sku="POT-1", name="Clay teapot", merchant_id="m-1", quantity=1, unit_price_fen=12034)


@pytest.mark.parametrize(
    ("fen", "text"),
    [(0, "¥0.00"), (5, "¥0.05"), (1234, "¥12.34"), (100, "¥1.00"), (123456789, "¥1,234,567.89")],
)
def test_amounts_are_formatted_from_fen(fen: int, text: str) -> None:
    assert format_fen(fen) == text


def test_a_single_merchant_order_tells_the_merchant_and_the_customer() -> None:
    notes = order_confirmed(confirmed(TEA), cause_id="e-1", at=T0)

    assert [(n.role, n.recipient, n.template) for n in notes] == [
        (Role.MERCHANT, "m-1", MERCHANT_NEW_ORDER),
        (Role.CUSTOMER, "c-1", CUSTOMER_ORDER_CONFIRMED),
    ]
    assert all(n.channel == INBOX and n.status is Status.PENDING and n.order_id == "o-1" for n in notes)
    customer = notes[1]
    assert "20261125-000001" in customer.subject
    assert "20261125-000001" in customer.body and "¥176.00" in customer.body


def test_a_multi_merchant_order_tells_each_merchant_once_about_their_own_lines() -> None:
    notes = order_confirmed(confirmed(TEA, CUP, POT), cause_id="e-1", at=T0)

    merchants = {n.recipient: n for n in notes if n.role is Role.MERCHANT}
    assert sorted(merchants) == ["m-1", "m-2"]
    assert len(notes) == 3
    m1, m2 = merchants["m-1"], merchants["m-2"]
    assert "Longjing tea ×2" in m1.body and "Clay teapot ×1" in m1.body and "Celadon cup" not in m1.body
    assert "¥296.34" in m1.body  # 2 × 88.00 + 120.34, this merchant's share only
    assert "Celadon cup ×1" in m2.body and "¥45.50" in m2.body
    customer = next(n for n in notes if n.role is Role.CUSTOMER)
    assert "¥341.84" in customer.body


def test_notification_ids_are_deterministic_and_distinct_per_recipient() -> None:
    first = order_confirmed(confirmed(TEA, CUP), cause_id="e-1", at=T0)
    again = order_confirmed(confirmed(TEA, CUP), cause_id="e-1", at=T0)
    other_cause = order_confirmed(confirmed(TEA, CUP), cause_id="e-2", at=T0)

    ids = [n.notification_id for n in first]
    assert ids == [n.notification_id for n in again]
    assert len(set(ids)) == len(ids)
    assert set(ids).isdisjoint(n.notification_id for n in other_cause)
    assert ids[0] == notification_id("e-1", "m-1", MERCHANT_NEW_ORDER)


def test_a_rejected_order_tells_only_the_customer_why() -> None:
    event = OrderRejected(
        order_id="o-1", order_no="20261125-000001", customer_id="c-1", reason="OUT_OF_STOCK", detail="TEA-1"
    )
    [note] = order_rejected(event, cause_id="e-1", at=T0)

    assert (note.role, note.recipient, note.template) == (Role.CUSTOMER, "c-1", CUSTOMER_ORDER_REJECTED)
    assert "20261125-000001" in note.body and "库存不足" in note.body and "TEA-1" in note.body


def test_a_cancelled_order_tells_only_the_customer_why() -> None:
    event = OrderCancelled(
        order_id="o-1",
        order_no="20261125-000001",
        customer_id="c-1",
        reason=OrderEndReason.PAYMENT_TIMEOUT,
    )
    [note] = order_cancelled(event, cause_id="e-1", at=T0)

    assert (note.role, note.recipient, note.template) == (Role.CUSTOMER, "c-1", CUSTOMER_ORDER_CANCELLED)
    assert "支付超时" in note.body and "20261125-000001" in note.subject


def test_every_reason_an_order_ends_for_has_words_for_the_customer() -> None:
    assert set(REASONS) == set(OrderEndReason)
    assert all(text.strip() for text in REASONS.values())


def test_delivery_outcome_counts_attempts() -> None:
    [note] = order_cancelled(
        OrderCancelled(order_id="o-1", order_no="n", customer_id="c-1", reason="PAYMENT_TIMEOUT"),
        cause_id="e-1",
        at=T0,
    )
    note.failed(T0, "boom")
    note.delivered(T0)

    assert (note.status, note.attempts, note.error) == (Status.SENT, 2, None)

"""Who is told what about an order, and how it reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.notification.domain import (
    CUSTOMER_CODES_DELIVERED,
    CUSTOMER_LATE_PAYMENT_RETURNED,
    CUSTOMER_ORDER_CANCELLED,
    CUSTOMER_ORDER_CONFIRMED,
    CUSTOMER_ORDER_REJECTED,
    CUSTOMER_REFUND_COMPLETED,
    INBOX,
    MERCHANT_NEW_ORDER,
    REASONS,
    TEMPLATES,
    Status,
    back_in_stock,
    codes_delivered,
    format_fen,
    late_payment_voided,
    low_stock,
    notification_id,
    order_cancelled,
    order_confirmed,
    order_rejected,
    payment_refunded,
)
from shared.contracts import (
    AssignedCodes,
    BackInStock,
    CodesAssigned,
    LowStock,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderRejected,
    PaymentRefunded,
    PaymentVoided,
    RefundReason,
    Role,
)

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


def late_void(**changes: object) -> PaymentVoided:
    event = PaymentVoided(
        order_id="o-1",
        payment_id="p-1",
        amount_fen=12800,
        reason=OrderEndReason.PAYMENT_TIMEOUT,
        customer_id="c-1",
        late=True,
    )
    return event.model_copy(update=changes)


def refund(**changes: object) -> PaymentRefunded:
    event = PaymentRefunded(
        order_id="o-1",
        payment_id="p-1",
        refund_id="r-1",
        customer_id="c-1",
        amount_fen=12800,
        refunded_total_fen=12800,
        captured_fen=12800,
        reason=RefundReason.REQUESTED,
    )
    return event.model_copy(update=changes)


def test_a_late_void_tells_the_customer_the_money_was_released_and_why() -> None:
    [note] = late_payment_voided(late_void(), cause_id="e-1", at=T0)

    assert (note.role, note.recipient, note.template, note.order_id) == (
        Role.CUSTOMER,
        "c-1",
        CUSTOMER_LATE_PAYMENT_RETURNED,
        "o-1",
    )
    assert note.channel == INBOX and note.cause_id == "e-1"
    assert "¥128.00" in note.subject and "¥128.00" in note.body
    assert "订单结束后才到账" in note.body and "支付超时" in note.body
    assert "已释放" in note.body and "不会从您的账户扣除" in note.body


def test_an_ordinary_void_or_one_without_a_customer_tells_no_one() -> None:
    assert late_payment_voided(late_void(late=False), cause_id="e-1", at=T0) == []
    assert late_payment_voided(late_void(customer_id=None), cause_id="e-1", at=T0) == []


def test_a_late_payment_refunded_tells_the_customer_it_went_back() -> None:
    [note] = payment_refunded(refund(reason=RefundReason.LATE_PAYMENT), cause_id="e-1", at=T0)

    assert (note.recipient, note.template) == ("c-1", CUSTOMER_LATE_PAYMENT_RETURNED)
    assert "¥128.00" in note.body and "订单结束后才到账" in note.body and "原路退回" in note.body
    assert "已释放" not in note.body


@pytest.mark.parametrize("reason", [RefundReason.REQUESTED, RefundReason.ORDER_ENDED])
def test_a_refund_tells_the_customer_it_went_through(reason: RefundReason) -> None:
    [note] = payment_refunded(refund(reason=reason), cause_id="e-1", at=T0)

    assert (note.recipient, note.template) == ("c-1", CUSTOMER_REFUND_COMPLETED)
    assert "退款 ¥128.00 已完成" == note.subject
    assert "您的退款 ¥128.00 已退回原支付账户，" in note.body and "累计" not in note.body


def test_a_partial_refund_says_how_much_has_gone_back_so_far() -> None:
    event = refund(amount_fen=3000, refunded_total_fen=5000, captured_fen=12800)

    [note] = payment_refunded(event, cause_id="e-1", at=T0)

    assert (
        "您的退款 ¥30.00" in note.body and "该笔付款 ¥128.00" in note.body and "累计已退 ¥50.00" in note.body
    )


def test_one_refund_or_void_is_one_notification_whatever_event_announces_it() -> None:
    [first] = payment_refunded(refund(), cause_id="e-1", at=T0)
    [again] = payment_refunded(refund(), cause_id="e-2", at=T0)
    [second_refund] = payment_refunded(refund(refund_id="r-2"), cause_id="e-3", at=T0)
    [void] = late_payment_voided(late_void(), cause_id="e-4", at=T0)
    [void_again] = late_payment_voided(late_void(), cause_id="e-5", at=T0)

    assert first.notification_id == again.notification_id != second_refund.notification_id
    assert void.notification_id == void_again.notification_id != first.notification_id


def test_every_template_renders_with_the_fields_its_decisions_give() -> None:
    rendered = {
        n.template
        for n in [
            *order_confirmed(confirmed(TEA), cause_id="e-1", at=T0),
            *order_rejected(
                OrderRejected(order_id="o", order_no="n", customer_id="c", reason="FRAUD"),
                cause_id="e",
                at=T0,
            ),
            *order_cancelled(
                OrderCancelled(order_id="o", order_no="n", customer_id="c", reason="FRAUD"),
                cause_id="e",
                at=T0,
            ),
            *late_payment_voided(late_void(), cause_id="e-1", at=T0),
            *payment_refunded(refund(), cause_id="e-1", at=T0),
            *codes_delivered(CODES, cause_id="e-1", at=T0),
            *back_in_stock(BACK, cause_id="e-1", at=T0),
            *low_stock(LOW, cause_id="e-1", at=T0),
        ]
    }
    assert rendered == set(TEMPLATES)


CODES = CodesAssigned(
    order_id="o-1",
    customer_id="c-1",
    lines=[
        AssignedCodes(sku="GIFT", sealed_codes=["v1.k.one", "v1.k.two"]),
        AssignedCodes(sku="TOPUP", sealed_codes=["v1.k.three"]),
    ],
)


def test_the_buyer_is_given_the_codes_sealed_beside_words_that_hold_none() -> None:
    [note] = codes_delivered(CODES, cause_id="e-1", at=T0)
    [again] = codes_delivered(CODES, cause_id="e-1", at=T0)

    assert (note.recipient, note.role, note.template) == ("c-1", Role.CUSTOMER, CUSTOMER_CODES_DELIVERED)
    assert note.sealed_codes == ("v1.k.one", "v1.k.two", "v1.k.three")
    assert "3 个兑换码" in note.subject
    assert "v1.k" not in note.subject + note.body
    assert "v1.k" not in repr(note)
    assert again.notification_id == note.notification_id


BACK = BackInStock(
    sku="TEA", name="Longjing", merchant_id="m-1", available=5, customer_ids=["c-1", "c-2", "c-1"]
)
LOW = LowStock(sku="TEA", name="Longjing", merchant_id="m-1", available=2, threshold=3)


def test_back_in_stock_tells_each_named_customer_once_about_the_product() -> None:
    notices = back_in_stock(BACK, cause_id="e-1", at=T0)

    assert [(n.recipient, n.role, n.order_id) for n in notices] == [
        ("c-1", Role.CUSTOMER, None),
        ("c-2", Role.CUSTOMER, None),
    ]
    assert notices[0].subject == "Longjing 到货了"
    assert "现可购买 5 件" in notices[0].body
    assert [n.notification_id for n in back_in_stock(BACK, cause_id="e-1", at=T0)] == [
        n.notification_id for n in notices
    ]
    assert notices[0].notification_id not in {
        n.notification_id for n in back_in_stock(BACK, cause_id="e-2", at=T0)
    }


def test_low_stock_tells_the_merchant_the_stock_and_its_threshold() -> None:
    [notice] = low_stock(LOW, cause_id="e-1", at=T0)

    assert (notice.recipient, notice.role, notice.order_id) == ("m-1", Role.MERCHANT, None)
    assert "仅剩 2 件" in notice.body and "预警值 3 件" in notice.body

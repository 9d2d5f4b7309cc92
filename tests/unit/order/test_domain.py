"""The order saga's state machine, driven fact by fact with no I/O."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.order.domain import (
    CatalogItem,
    Deadlines,
    Order,
    OrderError,
    OrderStatus,
    RequestedItem,
    UnknownProducts,
    price_lines,
)
from shared.contracts import (
    Event,
    FraudDecision,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    PaymentRequested,
    ProductKind,
)
from tests.unit.samples import ADDRESS, T0

pytestmark = pytest.mark.unit

DEADLINES = Deadlines(checks=timedelta(seconds=30), review=timedelta(hours=1), payment=timedelta(minutes=2))
CATALOG = {
    "TEA-1": CatalogItem("TEA-1", "Longjing tea", "m-1", ProductKind.PHYSICAL, 8800),
    "CUP-1": CatalogItem("CUP-1", "Celadon cup", "m-2", ProductKind.PHYSICAL, 4550),
    "OLD-1": CatalogItem("OLD-1", "Retired", "m-1", ProductKind.PHYSICAL, 100, active=False),
}


def new_order() -> tuple[Order, list[Event]]:
    lines = price_lines([RequestedItem("TEA-1", 2), RequestedItem("CUP-1", 1)], CATALOG)
    return Order.place(
        order_id="o-1",
        order_no="20261125-000001",
        customer_id="c-1",
        lines=lines,
        shipping_address=ADDRESS,
        payment_method=PaymentMethod.BANK_CARD,
        payment_token="tok_approve",
        now=T0,
        deadlines=DEADLINES,
        correlation_id="corr-1",
    )


def approved_and_reserved() -> Order:
    order, _ = new_order()
    order.stock_reserved(T0, DEADLINES)
    order.fraud_scored(T0, FraudDecision.APPROVE, 3, [], DEADLINES)
    return order


def test_pricing_in_fen_merges_repeated_skus() -> None:
    lines = price_lines(
        [RequestedItem("TEA-1", 1), RequestedItem("TEA-1", 2), RequestedItem("CUP-1", 1)], CATALOG
    )
    assert [(line.sku, line.quantity, line.line_total_fen) for line in lines] == [
        ("TEA-1", 3, 26400),
        ("CUP-1", 1, 4550),
    ]


def test_unknown_or_inactive_skus_are_refused_by_name() -> None:
    with pytest.raises(UnknownProducts) as refused:
        price_lines([RequestedItem("NOPE", 1), RequestedItem("OLD-1", 1)], CATALOG)
    assert refused.value.skus == ["NOPE", "OLD-1"]


def test_quantity_per_product_is_capped_after_merging() -> None:
    with pytest.raises(OrderError):
        price_lines([RequestedItem("TEA-1", 600), RequestedItem("TEA-1", 600)], CATALOG)


def test_placing_emits_order_placed_with_total() -> None:
    order, events = new_order()
    assert order.status is OrderStatus.PENDING
    assert order.deadline_at == T0 + DEADLINES.checks
    [placed] = events
    assert isinstance(placed, OrderPlaced)
    assert placed.total_fen == 2 * 8800 + 4550 == order.total_fen


@pytest.mark.parametrize("stock_first", [True, False])
def test_payment_is_requested_only_once_both_checks_passed(stock_first: bool) -> None:
    order, _ = new_order()
    first = (
        order.stock_reserved(T0, DEADLINES)
        if stock_first
        else order.fraud_scored(T0, FraudDecision.APPROVE, 5, [], DEADLINES)
    )
    assert (first, order.status) == ([], OrderStatus.PENDING)
    second = (
        order.fraud_scored(T0, FraudDecision.APPROVE, 5, [], DEADLINES)
        if stock_first
        else order.stock_reserved(T0, DEADLINES)
    )
    [requested] = second
    assert isinstance(requested, PaymentRequested)
    assert requested.amount_fen == order.total_fen and requested.token == "tok_approve"
    assert order.status is OrderStatus.AWAITING_PAYMENT
    assert order.deadline_at == T0 + DEADLINES.payment


def test_happy_path_confirms_and_records_every_step() -> None:
    order = approved_and_reserved()
    [confirmed] = order.payment_authorized(T0, "pay-1")
    assert isinstance(confirmed, OrderConfirmed) and confirmed.payment_id == "pay-1"
    assert order.status is OrderStatus.CONFIRMED and order.deadline_at is None
    assert [e.cause for e in order.timeline] == [
        "order.placed",
        "inventory.stock_reserved",
        "fraud.scored",
        "order.payment_requested",
        "payment.authorized",
    ]


def test_out_of_stock_rejects_without_payment() -> None:
    order, _ = new_order()
    [rejected] = order.stock_rejected(T0, "TEA-1 (asked 2, 0 left)")
    assert isinstance(rejected, OrderRejected) and rejected.reason == OrderEndReason.OUT_OF_STOCK
    assert order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES) == []
    assert order.status is OrderStatus.REJECTED


def test_fraud_reject_rejects_even_with_stock_held() -> None:
    order, _ = new_order()
    order.stock_reserved(T0, DEADLINES)
    [rejected] = order.fraud_scored(T0, FraudDecision.REJECT, 97, ["BLOCKED_CUSTOMER"], DEADLINES)
    assert isinstance(rejected, OrderRejected) and rejected.reason == OrderEndReason.FRAUD
    assert "BLOCKED_CUSTOMER" in rejected.detail


def test_review_waits_then_an_approval_continues() -> None:
    order, _ = new_order()
    order.stock_reserved(T0, DEADLINES)
    assert order.fraud_scored(T0, FraudDecision.REVIEW, 60, ["AMOUNT_HIGH"], DEADLINES) == []
    assert order.status is OrderStatus.UNDER_REVIEW
    assert order.deadline_at == T0 + DEADLINES.review
    [requested] = order.fraud_scored(T0, FraudDecision.APPROVE, 60, [], DEADLINES)
    assert isinstance(requested, PaymentRequested)


def test_payment_decline_cancels() -> None:
    order = approved_and_reserved()
    [cancelled] = order.payment_failed(T0, "pay-1", "CARD_DECLINED")
    assert isinstance(cancelled, OrderCancelled)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_DECLINED)


def test_repeated_and_late_facts_change_nothing() -> None:
    order = approved_and_reserved()
    steps = len(order.timeline)
    assert order.stock_reserved(T0, DEADLINES) == []
    assert order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES) == []
    order.payment_authorized(T0, "pay-1")
    assert order.payment_authorized(T0, "pay-1") == []
    assert order.payment_failed(T0, "pay-1", "late") == []
    assert len(order.timeline) == steps + 1


@pytest.mark.parametrize(
    ("prepare", "reason", "status"),
    [
        (lambda o: None, OrderEndReason.STOCK_TIMEOUT, OrderStatus.REJECTED),
        (lambda o: o.stock_reserved(T0, DEADLINES), OrderEndReason.FRAUD_TIMEOUT, OrderStatus.REJECTED),
        (
            lambda o: (
                o.stock_reserved(T0, DEADLINES),
                o.fraud_scored(T0, FraudDecision.REVIEW, 50, [], DEADLINES),
            ),
            OrderEndReason.REVIEW_TIMEOUT,
            OrderStatus.REJECTED,
        ),
        (
            lambda o: (
                o.stock_reserved(T0, DEADLINES),
                o.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES),
            ),
            OrderEndReason.PAYMENT_TIMEOUT,
            OrderStatus.CANCELLED,
        ),
    ],
)
def test_every_waiting_step_has_a_deadline(prepare, reason, status) -> None:  # type: ignore[no-untyped-def]
    order, _ = new_order()
    prepare(order)
    assert order.deadline_at is not None
    assert order.deadline_passed(order.deadline_at - timedelta(milliseconds=1)) == []
    [ended] = order.deadline_passed(order.deadline_at)
    assert isinstance(ended, OrderRejected | OrderCancelled)
    assert (order.status, order.reason, ended.reason) == (status, reason, reason)
    assert order.deadline_passed(T0 + timedelta(days=2)) == []


def test_final_orders_have_no_deadline() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    assert order.deadline_passed(T0 + timedelta(days=365)) == []

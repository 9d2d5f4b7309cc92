"""The order saga's state machine, driven fact by fact with no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.order.domain import (
    MAX_LINES,
    MAX_QUANTITY,
    CannotCancel,
    CatalogItem,
    Deadlines,
    FieldIssue,
    MerchantTerms,
    Order,
    OrderError,
    OrderStatus,
    PayAction,
    PaymentStatus,
    RequestedItem,
    UnknownProducts,
    money,
    price_lines,
    review_items,
    same_contact,
)
from shared.contracts import (
    DeclineReason,
    Event,
    FraudDecision,
    MerchantStatus,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PayActionType,
    PaymentMethod,
    PaymentRequested,
    PriceTier,
    ProductKind,
    RefundReason,
)
from tests.unit.samples import ADDRESS, T0

pytestmark = pytest.mark.unit

DEADLINES = Deadlines(checks=timedelta(seconds=30), review=timedelta(hours=1), payment=timedelta(minutes=2))
CATALOG = {
    "TEA-1": CatalogItem("TEA-1", "Longjing tea", "m-1", ProductKind.PHYSICAL, 8800),
    "CUP-1": CatalogItem("CUP-1", "Celadon cup", "m-2", ProductKind.PHYSICAL, 4550),
    "OLD-1": CatalogItem("OLD-1", "Retired", "m-1", ProductKind.PHYSICAL, 100, active=False),
    "PUER-1": CatalogItem("PUER-1", "Pu'er cake", "m-1", ProductKind.PHYSICAL, 12800, max_per_order=2),
}
# The domain keeps the token as the gateway sealed it: an opaque string it never opens.
SEALED = "x25519.k0.sealed-for-payment"
QR = PayAction(PayActionType.QR, "https://pay.example/qr/1")
ALIPAY_ONLY = {"m-1": MerchantTerms("m-1", frozenset({PaymentMethod.ALIPAY}))}


def new_order(
    contact: str | None = None, method: PaymentMethod = PaymentMethod.BANK_CARD
) -> tuple[Order, list[Event]]:
    lines = price_lines([RequestedItem("TEA-1", 2), RequestedItem("CUP-1", 1)], CATALOG)
    return Order.place(
        order_id="o-1",
        order_no="20261125-000001",
        customer_id="c-1",
        lines=lines,
        shipping_address=ADDRESS,
        payment_method=method,
        payment_token=SEALED if method is PaymentMethod.BANK_CARD else None,
        now=T0,
        deadlines=DEADLINES,
        correlation_id="corr-1",
        contact=contact,
    )


def approved_and_reserved(method: PaymentMethod = PaymentMethod.BANK_CARD) -> Order:
    order, _ = new_order(method=method)
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


BULK_TEA = CatalogItem(
    "BULK-1",
    "Longjing tea by the tin",
    "m-1",
    ProductKind.PHYSICAL,
    1000,
    price_tiers=(
        PriceTier(min_quantity=3, unit_price_fen=900),
        PriceTier(min_quantity=10, unit_price_fen=800),
    ),
)


@pytest.mark.parametrize(
    ("quantity", "unit_price_fen"),
    [(1, 1000), (2, 1000), (3, 900), (9, 900), (10, 800), (999, 800)],
)
def test_a_line_is_priced_at_the_highest_tier_its_quantity_reaches(
    quantity: int, unit_price_fen: int
) -> None:
    [priced] = price_lines([RequestedItem("BULK-1", quantity)], {**CATALOG, "BULK-1": BULK_TEA})

    assert (priced.unit_price_fen, priced.line_total_fen) == (unit_price_fen, unit_price_fen * quantity)


def test_a_tier_is_reached_by_the_merged_quantity_of_a_repeated_sku() -> None:
    lines = price_lines(
        [RequestedItem("BULK-1", 2), RequestedItem("TEA-1", 3), RequestedItem("BULK-1", 1)],
        {**CATALOG, "BULK-1": BULK_TEA},
    )

    assert [(line.sku, line.quantity, line.unit_price_fen) for line in lines] == [
        ("BULK-1", 3, 900),
        ("TEA-1", 3, 8800),
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
    assert requested.amount_fen == order.total_fen and requested.sealed_token == SEALED
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
    [rejected] = order.stock_rejected(T0, ["TEA-1"], "TEA-1 (asked 2, 0 left)")
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
    [cancelled] = order.payment_failed(T0, "pay-1", DeclineReason.CARD_DECLINED)
    assert isinstance(cancelled, OrderCancelled)
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_DECLINED)


def test_repeated_and_late_facts_change_nothing() -> None:
    order = approved_and_reserved()
    steps = len(order.timeline)
    assert order.stock_reserved(T0, DEADLINES) == []
    assert order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES) == []
    order.payment_authorized(T0, "pay-1")
    assert order.payment_authorized(T0, "pay-1") == []
    assert order.payment_failed(T0, "pay-1", DeclineReason.CARD_DECLINED, "late") == []
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


def test_an_order_knows_its_merchants_and_a_guests_contact() -> None:
    order, _ = new_order(contact="phone:13800138000")
    assert order.merchant_ids == {"m-1", "m-2"}
    assert order.contact == "phone:13800138000"
    assert new_order()[0].contact is None


# --- reviewing a request against the catalog ----------------------------------------------------


def test_a_request_the_catalog_and_merchants_accept_has_no_issues() -> None:
    items = [RequestedItem("TEA-1", MAX_QUANTITY), RequestedItem("PUER-1", 2)]
    assert review_items(items, CATALOG, ALIPAY_ONLY, PaymentMethod.ALIPAY) == []


def test_a_products_limit_defaults_to_the_platform_maximum() -> None:
    assert CATALOG["TEA-1"].max_per_order == MAX_QUANTITY


def test_unknown_and_inactive_products_are_named_at_their_positions() -> None:
    items = [RequestedItem("TEA-1", 1), RequestedItem("NOPE", 1), RequestedItem("OLD-1", 1)]
    issues = review_items(items, CATALOG, {}, None)
    assert [issue.field for issue in issues] == ["items.1.sku", "items.2.sku"]
    assert "NOPE" in issues[0].message and "OLD-1" in issues[1].message


def test_a_products_limit_counts_the_same_product_on_every_line() -> None:
    items = [RequestedItem("PUER-1", 1), RequestedItem("TEA-1", 5), RequestedItem("PUER-1", 2)]
    issues = review_items(items, CATALOG, {}, None)
    too_many = "at most 2 of PUER-1 per order (asked 3)"
    assert issues == [FieldIssue("items.0.quantity", too_many), FieldIssue("items.2.quantity", too_many)]
    assert review_items([RequestedItem("PUER-1", 1), RequestedItem("PUER-1", 1)], CATALOG, {}, None) == []


def test_malformed_items_are_skipped_and_the_others_keep_their_positions() -> None:
    items = [None, RequestedItem("NOPE", 1), None, RequestedItem("PUER-1", 3)]
    assert [issue.field for issue in review_items(items, CATALOG, {}, None)] == [
        "items.1.sku",
        "items.3.quantity",
    ]
    assert review_items([None, None], CATALOG, {}, PaymentMethod.ALIPAY) == []


def test_a_method_merchants_refuse_is_one_issue_naming_each_refusing_merchant_once() -> None:
    merchants = {**ALIPAY_ONLY, "m-2": MerchantTerms("m-2", frozenset({PaymentMethod.BANK_CARD}))}
    items = [RequestedItem("TEA-1", 1), RequestedItem("CUP-1", 1), RequestedItem("PUER-1", 1)]
    [issue] = review_items(items, CATALOG, merchants, PaymentMethod.WECHAT_PAY)
    assert issue.field == "payment.method"
    assert "wechat_pay" in issue.message and "m-1, m-2" in issue.message
    [only_m1] = review_items(items, CATALOG, merchants, PaymentMethod.BANK_CARD)
    assert "m-1" in only_m1.message and "m-2" not in only_m1.message


def test_a_merchant_missing_from_the_replica_accepts_every_method() -> None:
    for method in PaymentMethod:
        assert review_items([RequestedItem("CUP-1", 1)], CATALOG, ALIPAY_ONLY, method) == []


def test_without_a_readable_payment_method_only_the_items_are_reviewed() -> None:
    assert review_items([RequestedItem("TEA-1", 1)], CATALOG, ALIPAY_ONLY, None) == []


def test_more_distinct_products_than_an_order_may_hold_is_an_issue_of_the_items() -> None:
    catalog = {
        f"SKU-{n}": CatalogItem(f"SKU-{n}", f"Product {n}", "m-1", ProductKind.VIRTUAL, 100)
        for n in range(MAX_LINES + 1)
    }
    items = [RequestedItem(sku, 1) for sku in catalog]
    assert [issue.field for issue in review_items(items, catalog, {}, None)] == ["items"]
    assert review_items(items[:MAX_LINES], catalog, {}, None) == []


def test_a_contact_matches_only_the_one_recorded() -> None:
    assert same_contact("email:li@example.com", "email:li@example.com")
    assert not same_contact("email:li@example.com", "email:lei@example.com")
    assert not same_contact("email:li@example.com", None)


# --- a customer's cancel ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prepare", "waiting_in"),
    [
        (lambda o: None, OrderStatus.PENDING),
        (lambda o: o.stock_reserved(T0, DEADLINES), OrderStatus.PENDING),
        (lambda o: o.fraud_scored(T0, FraudDecision.REVIEW, 60, [], DEADLINES), OrderStatus.UNDER_REVIEW),
        (
            lambda o: (
                o.stock_reserved(T0, DEADLINES),
                o.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES),
            ),
            OrderStatus.AWAITING_PAYMENT,
        ),
    ],
)
def test_a_customer_may_cancel_an_order_that_is_not_paid_yet(prepare, waiting_in) -> None:  # type: ignore[no-untyped-def]
    order, _ = new_order()
    prepare(order)
    assert order.status is waiting_in
    [cancelled] = order.cancel_by_customer(T0)
    assert isinstance(cancelled, OrderCancelled) and cancelled.reason is OrderEndReason.CUSTOMER_CANCELLED
    assert (cancelled.order_id, cancelled.order_no) == (order.order_id, order.order_no)
    assert (order.status, order.reason, order.deadline_at) == (
        OrderStatus.CANCELLED,
        OrderEndReason.CUSTOMER_CANCELLED,
        None,
    )
    entry = order.timeline[-1]
    assert (entry.status, entry.cause) == (OrderStatus.CANCELLED, "customer.cancelled")
    assert "cancelled" in entry.note
    # Whatever comes late changes nothing any more.
    assert order.payment_authorized(T0, "pay-1") == []
    assert order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES) == []
    assert order.deadline_passed(T0 + timedelta(days=1)) == []


def test_cancelling_twice_is_no_error_and_ends_the_order_once() -> None:
    order, _ = new_order()
    order.cancel_by_customer(T0)
    steps = len(order.timeline)
    assert order.cancel_by_customer(T0) == []
    assert len(order.timeline) == steps


def test_a_paid_order_cannot_be_cancelled_by_the_customer() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    steps = len(order.timeline)
    with pytest.raises(CannotCancel, match="refund"):
        order.cancel_by_customer(T0)
    assert order.status is OrderStatus.CONFIRMED and len(order.timeline) == steps


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (lambda o: o.stock_rejected(T0, ["TEA-1"], "short"), OrderEndReason.OUT_OF_STOCK),
        (lambda o: o.fraud_scored(T0, FraudDecision.REJECT, 99, [], DEADLINES), OrderEndReason.FRAUD),
        (lambda o: o.deadline_passed(T0 + DEADLINES.checks), OrderEndReason.STOCK_TIMEOUT),
        (
            lambda o: (
                o.stock_reserved(T0, DEADLINES),
                o.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES),
                o.payment_failed(T0, "pay-1", DeclineReason.CARD_DECLINED),
            ),
            OrderEndReason.PAYMENT_DECLINED,
        ),
    ],
)
def test_an_order_that_ended_otherwise_cannot_be_cancelled(end, reason) -> None:  # type: ignore[no-untyped-def]
    order, _ = new_order()
    end(order)
    assert order.reason is reason
    with pytest.raises(CannotCancel):
        order.cancel_by_customer(T0)
    assert order.reason is reason


# --- what the customer reads and what only an admin reads -----------------------------------------


def test_customer_notes_never_carry_risk_scores_rules_or_stock_counts_while_details_do() -> None:
    reviewed = new_order()[0]
    reviewed.stock_reserved(T0, DEADLINES)
    reviewed.fraud_scored(T0, FraudDecision.REVIEW, 61, ["AMOUNT_HIGH"], DEADLINES)
    reviewed.fraud_scored(T0, FraudDecision.APPROVE, 61, ["AMOUNT_HIGH"], DEADLINES)
    reviewed.payment_authorized(T0, "pay-1")
    fraudulent = new_order()[0]
    fraudulent.fraud_scored(T0, FraudDecision.REJECT, 97, ["BLOCKED_CUSTOMER"], DEADLINES)
    short = new_order()[0]
    short.stock_rejected(T0, ["TEA-1"], "TEA-1 (asked 2, 0 left)")

    internal = ("61", "97", "AMOUNT_HIGH", "BLOCKED_CUSTOMER", "risk", "score", "asked", "left")
    for order in (reviewed, fraudulent, short):
        for entry in order.timeline:
            assert entry.note, f"{entry.cause} has a note for the customer"
            assert not any(word in entry.note.lower() for word in map(str.lower, internal)), entry.note

    details = [entry.detail for entry in reviewed.timeline if entry.cause == "fraud.scored"]
    assert details == [
        "sent to manual review (risk score 61: AMOUNT_HIGH)",
        "risk approved (risk score 61: AMOUNT_HIGH)",
    ]
    assert "risk score 97: BLOCKED_CUSTOMER" in fraudulent.timeline[-1].detail
    assert "TEA-1 (asked 2, 0 left)" in short.timeline[-1].detail
    assert "Longjing tea" in short.timeline[-1].note, "the customer reads the product's name, not its SKU"


# --- the payment: its token, its view and what the customer reads ---------------------------------


def test_the_sealed_token_is_dropped_once_payment_requested_carries_it() -> None:
    order, _ = new_order()
    order.stock_reserved(T0, DEADLINES)
    assert order.payment_token == SEALED, "kept while payment is still to be requested"
    [requested] = order.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
    assert isinstance(requested, PaymentRequested) and requested.sealed_token == SEALED
    assert order.payment_token is None


def test_a_wallet_order_requests_payment_without_a_token() -> None:
    order = approved_and_reserved(PaymentMethod.ALIPAY)
    assert order.payment_token is None and order.payment_status is PaymentStatus.REQUESTED


def test_the_payment_view_is_not_requested_until_the_checks_pass_and_stays_so_if_rejected() -> None:
    order, _ = new_order()
    assert (order.payment_status, order.pay_action, order.refunded_fen) == (
        PaymentStatus.NOT_REQUESTED,
        None,
        0,
    )
    order.stock_rejected(T0, ["TEA-1"], "short")
    assert order.payment_status is PaymentStatus.NOT_REQUESTED


@pytest.mark.parametrize(
    ("method", "action", "says"),
    [
        (PaymentMethod.WECHAT_PAY, QR, "Scan the QR code with WeChat Pay to pay ¥221.50."),
        (
            PaymentMethod.ALIPAY,
            PayAction(PayActionType.REDIRECT, "https://pay.example/alipay/1"),
            "Follow the link to pay ¥221.50 with Alipay.",
        ),
    ],
)
def test_a_pending_wallet_payment_shows_the_payer_what_to_do(
    method: PaymentMethod, action: PayAction, says: str
) -> None:
    order = approved_and_reserved(method)
    assert order.payment_pending(T0, "pay-1", order.total_fen, action) == []
    assert (order.status, order.payment_status, order.pay_action) == (
        OrderStatus.AWAITING_PAYMENT,
        PaymentStatus.PENDING,
        action,
    )
    entry = order.timeline[-1]
    assert (entry.status, entry.cause, entry.note) == (OrderStatus.AWAITING_PAYMENT, "payment.pending", says)
    steps = len(order.timeline)
    assert order.payment_pending(T0, "pay-1", order.total_fen, action) == []
    assert len(order.timeline) == steps, "a repeated PaymentPending adds nothing"


def test_an_authorization_confirms_and_the_pay_action_goes() -> None:
    order = approved_and_reserved(PaymentMethod.WECHAT_PAY)
    order.payment_pending(T0, "pay-1", order.total_fen, QR)
    [confirmed] = order.payment_authorized(T0, "pay-1")
    assert isinstance(confirmed, OrderConfirmed)
    assert (order.payment_status, order.pay_action) == (PaymentStatus.AUTHORIZED, None)


def test_a_capture_marks_the_payment_captured_once() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    assert order.payment_captured(T0, "pay-1", order.total_fen) == []
    assert (order.status, order.payment_status) == (OrderStatus.CONFIRMED, PaymentStatus.CAPTURED)
    assert order.timeline[-1].note == "¥221.50 was charged."
    steps = len(order.timeline)
    assert order.payment_captured(T0, "pay-1", order.total_fen) == []
    assert len(order.timeline) == steps


def test_a_pending_payment_that_comes_after_the_order_ended_shows_nothing_to_pay() -> None:
    order = approved_and_reserved(PaymentMethod.WECHAT_PAY)
    order.deadline_passed(T0 + DEADLINES.payment)
    steps = len(order.timeline)
    assert order.payment_pending(T0, "pay-1", order.total_fen, QR) == []
    assert (order.pay_action, len(order.timeline)) == (None, steps)


def test_an_order_that_ends_while_the_payer_has_to_act_no_longer_shows_the_action() -> None:
    order = approved_and_reserved(PaymentMethod.WECHAT_PAY)
    order.payment_pending(T0, "pay-1", order.total_fen, QR)
    order.cancel_by_customer(T0)
    assert order.pay_action is None


def test_a_provider_that_did_not_answer_in_time_cancels_with_provider_timeout() -> None:
    order = approved_and_reserved()
    [cancelled] = order.payment_failed(T0, "pay-1", DeclineReason.PROVIDER_TIMEOUT, "3 tries")
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.reason, cancelled.detail) == (
        OrderEndReason.PROVIDER_TIMEOUT,
        "PROVIDER_TIMEOUT: 3 tries",
    )
    assert (order.status, order.reason, order.payment_status) == (
        OrderStatus.CANCELLED,
        OrderEndReason.PROVIDER_TIMEOUT,
        PaymentStatus.FAILED,
    )
    note = order.timeline[-1].note
    assert "did not answer in time" in note and "nothing was charged" in note


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        (DeclineReason.CARD_DECLINED, "Your card was declined"),
        (DeclineReason.INSUFFICIENT_FUNDS, "insufficient funds"),
        (DeclineReason.INVALID_TOKEN, "payment details could not be used"),
        (DeclineReason.PROVIDER_DECLINED, "provider declined"),
        (DeclineReason.PROVIDER_ERROR, "could not confirm"),
        (DeclineReason.PAYER_DECLINED, "You declined the payment"),
        (DeclineReason.AMOUNT_MISMATCH, "did not match"),
    ],
)
def test_any_other_failure_cancels_as_declined_and_says_why_in_words(
    reason: DeclineReason, says: str
) -> None:
    order = approved_and_reserved(PaymentMethod.WECHAT_PAY)
    order.payment_pending(T0, "pay-1", order.total_fen, QR)
    [cancelled] = order.payment_failed(T0, "pay-1", reason, "provider code 51")
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.reason, cancelled.detail) == (
        OrderEndReason.PAYMENT_DECLINED,
        f"{reason}: provider code 51",
    )
    entry = order.timeline[-1]
    assert says in entry.note and "the order is cancelled" in entry.note
    assert reason.value not in entry.note and "51" not in entry.note, "codes are for the admin"
    assert entry.detail == f"PAYMENT_DECLINED: {reason}: provider code 51"
    assert (order.payment_status, order.pay_action) == (PaymentStatus.FAILED, None)


def test_money_taken_for_a_mismatched_amount_is_said_to_go_back_not_to_be_uncharged() -> None:
    order = approved_and_reserved(PaymentMethod.ALIPAY)
    order.payment_failed(T0, "pay-1", DeclineReason.AMOUNT_MISMATCH)
    note = order.timeline[-1].note
    assert "given back in full" in note and "nothing was charged" not in note


def test_a_failure_without_detail_is_described_by_its_code_alone() -> None:
    order = approved_and_reserved()
    [cancelled] = order.payment_failed(T0, "pay-1", DeclineReason.CARD_DECLINED)
    assert isinstance(cancelled, OrderCancelled) and cancelled.detail == "CARD_DECLINED"


def test_a_failure_after_the_order_ended_shows_in_the_payment_view_only() -> None:
    order = approved_and_reserved()
    order.deadline_passed(T0 + DEADLINES.payment)
    assert order.payment_failed(T0, "pay-1", DeclineReason.PROVIDER_TIMEOUT) == []
    assert (order.status, order.reason, order.payment_status) == (
        OrderStatus.CANCELLED,
        OrderEndReason.PAYMENT_TIMEOUT,
        PaymentStatus.FAILED,
    )
    assert order.timeline[-1].note == "The payment provider did not answer in time; nothing was charged."
    steps = len(order.timeline)
    assert order.payment_failed(T0, "pay-1", DeclineReason.PROVIDER_TIMEOUT) == []
    assert len(order.timeline) == steps


def test_a_late_authorization_released_is_told_to_the_customer_and_the_order_stays_cancelled() -> None:
    order = approved_and_reserved()
    order.cancel_by_customer(T0)
    assert order.payment_authorized(T0, "pay-1") == []
    assert order.payment_voided(T0, "pay-1", 1280, late=True) == []
    assert (order.status, order.reason, order.payment_status, order.payment_id) == (
        OrderStatus.CANCELLED,
        OrderEndReason.CUSTOMER_CANCELLED,
        PaymentStatus.VOIDED,
        "pay-1",
    )
    entry = order.timeline[-1]
    assert (entry.status, entry.cause) == (OrderStatus.CANCELLED, "payment.voided")
    assert entry.note == (
        "A payment that arrived after your order was cancelled was released: ¥12.80. Nothing was charged."
    )
    steps = len(order.timeline)
    assert order.payment_voided(T0, "pay-1", 1280, late=True) == []
    assert len(order.timeline) == steps


def test_a_void_on_time_says_the_payment_was_released() -> None:
    order = approved_and_reserved()
    order.deadline_passed(T0 + DEADLINES.payment)
    order.payment_voided(T0, "pay-1", 22150, late=False)
    assert order.timeline[-1].note == "The payment of ¥221.50 was released. Nothing was charged."


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        (
            RefundReason.LATE_PAYMENT,
            "A payment that arrived after your order was cancelled was refunded in full: ¥12.80.",
        ),
        (
            RefundReason.ORDER_ENDED,
            "Your order was cancelled after the payment was taken; it was refunded in full: ¥12.80.",
        ),
    ],
)
def test_a_late_payment_refunded_is_told_to_the_customer_and_the_order_stays_cancelled(
    reason: RefundReason, says: str
) -> None:
    order = approved_and_reserved(PaymentMethod.WECHAT_PAY)
    order.deadline_passed(T0 + DEADLINES.payment)
    # The capture of a late payment is not told on its own: the refund that follows tells it all.
    steps = len(order.timeline)
    assert order.payment_captured(T0, "pay-1", 1280) == []
    assert len(order.timeline) == steps
    refunded = order.payment_refunded(
        T0, "pay-1", "rf-1", 1280, refunded_total_fen=1280, captured_fen=1280, reason=reason
    )
    assert refunded == []
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_TIMEOUT)
    assert (order.payment_status, order.refunded_fen) == (PaymentStatus.REFUNDED, 1280)
    entry = order.timeline[-1]
    assert (entry.status, entry.cause, entry.note) == (OrderStatus.CANCELLED, "payment.refunded", says)
    assert "rf-1" in entry.detail and "rf-1" not in entry.note


def test_requested_refunds_add_up_and_a_repeated_or_older_one_changes_nothing() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    order.payment_captured(T0, "pay-1", 22150)

    def refund(refund_id: str, amount: int, total: int) -> None:
        order.payment_refunded(
            T0,
            "pay-1",
            refund_id,
            amount,
            refunded_total_fen=total,
            captured_fen=22150,
            reason=RefundReason.REQUESTED,
        )

    refund("rf-1", 4550, 4550)
    assert (order.status, order.payment_status, order.refunded_fen) == (
        OrderStatus.CONFIRMED,
        PaymentStatus.CAPTURED,
        4550,
    )
    assert order.timeline[-1].note == "¥45.50 was refunded to you (¥45.50 of ¥221.50 so far)."
    steps = len(order.timeline)
    refund("rf-1", 4550, 4550)
    assert len(order.timeline) == steps
    refund("rf-2", 17600, 22150)
    assert (order.status, order.payment_status, order.refunded_fen) == (
        OrderStatus.CONFIRMED,
        PaymentStatus.REFUNDED,
        22150,
    )
    assert order.timeline[-1].note == "¥176.00 was refunded to you; the payment is refunded in full."
    refund("rf-1", 4550, 4550)
    assert (order.refunded_fen, len(order.timeline)) == (22150, steps + 1)


def test_every_decline_reason_has_words_of_its_own_for_the_customer() -> None:
    for reason in DeclineReason:
        order = approved_and_reserved()
        order.payment_failed(T0, "pay-1", reason)
        assert "did not go through" not in order.timeline[-1].note, f"{reason} has no words of its own"


def test_money_reads_in_yuan_from_integer_fen() -> None:
    assert (money(1280), money(5), money(100000), money(1280, "USD")) == (
        "¥12.80",
        "¥0.05",
        "¥1000.00",
        "12.80 USD",
    )


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (MerchantStatus.PENDING, "", "TEA-1 cannot be ordered: merchant m-1 is not approved yet"),
        (
            MerchantStatus.SUSPENDED,
            "fake tea",
            "TEA-1 cannot be ordered: merchant m-1 is suspended: fake tea",
        ),
        (MerchantStatus.REJECTED, "no licence", "merchant m-1 was not approved: no licence"),
    ],
)
def test_a_product_of_a_merchant_that_is_not_approved_is_refused_naming_why(
    status: MerchantStatus, reason: str, message: str
) -> None:
    merchants = {"m-1": MerchantTerms("m-1", frozenset(PaymentMethod), status, reason)}
    delisted = {**CATALOG, "TEA-1": replace(CATALOG["TEA-1"], active=False)}

    for catalog in (CATALOG, delisted):
        issues = review_items(
            [RequestedItem("CUP-1", 1), RequestedItem("TEA-1", 1)], catalog, merchants, None
        )

        assert [(issue.field, message in issue.message) for issue in issues] == [("items.1.sku", True)]
    approved = {"m-1": MerchantTerms("m-1", frozenset(PaymentMethod), MerchantStatus.APPROVED)}
    assert review_items([RequestedItem("TEA-1", 1)], CATALOG, approved, None) == []


def test_order_placed_carries_the_latest_the_order_may_still_be_approved_and_paid() -> None:
    _, [placed] = new_order()
    assert isinstance(placed, OrderPlaced)
    # Checks, then a manual review, then the payment: the longest an order can wait before paying.
    assert placed.hold_until == T0 + timedelta(seconds=30) + timedelta(hours=1) + timedelta(minutes=2)
    assert DEADLINES.hold_until(T0) == placed.hold_until


@pytest.mark.parametrize("captured", [False, True])
def test_a_lost_reservation_cancels_a_paid_order_and_tells_the_customer_the_money_goes_back(
    captured: bool,
) -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    if captured:
        order.payment_captured(T0, "pay-1", order.total_fen)

    [cancelled] = order.reservation_lost(T0, ["TEA-1"], "TEA-1 (asked 2, 0 left)")

    assert cancelled == OrderCancelled(
        order_id="o-1",
        order_no="20261125-000001",
        customer_id="c-1",
        reason=OrderEndReason.RESERVATION_LOST,
        detail="TEA-1 (asked 2, 0 left)",
    )
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, OrderEndReason.RESERVATION_LOST)
    assert order.deadline_at is None
    entry = order.timeline[-1]
    assert (entry.status, entry.cause) == (OrderStatus.CANCELLED, "inventory.stock_rejected")
    assert entry.note == (
        "Sorry, Longjing tea sold out while your payment was on its way; the order is cancelled "
        "and your payment is refunded in full."
    )
    # Stock counts are for the admin's detail, not the customer's note.
    assert "asked 2" in entry.detail and "asked" not in entry.note
    # Payment gives the money back on OrderCancelled; until it says so, the view shows what it was.
    assert order.payment_status is (PaymentStatus.CAPTURED if captured else PaymentStatus.AUTHORIZED)


def test_a_lost_reservation_told_twice_cancels_once() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    assert len(order.reservation_lost(T0, ["TEA-1"], "")) == 1
    steps = len(order.timeline)

    assert order.reservation_lost(T0, ["TEA-1"], "") == []
    assert len(order.timeline) == steps and order.reason is OrderEndReason.RESERVATION_LOST


def test_a_lost_reservation_without_shortages_still_says_what_happened() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    order.reservation_lost(T0, [], "RESERVATION_LOST")
    assert order.timeline[-1].note.startswith("Sorry, some items sold out while your payment")


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda order: None, id="pending"),
        pytest.param(
            lambda order: (
                order.stock_reserved(T0, DEADLINES),
                order.fraud_scored(T0, FraudDecision.APPROVE, 3, [], DEADLINES),
            ),
            id="awaiting_payment",
        ),
        pytest.param(lambda order: order.stock_rejected(T0, ["TEA-1"], ""), id="rejected"),
        pytest.param(lambda order: order.cancel_by_customer(T0), id="cancelled"),
    ],
)
def test_a_lost_reservation_only_cancels_a_confirmed_order(prepare) -> None:  # type: ignore[no-untyped-def]
    order, _ = new_order()
    prepare(order)
    status, reason, steps = order.status, order.reason, len(order.timeline)

    assert order.reservation_lost(T0, ["TEA-1"], "") == []
    assert (order.status, order.reason, len(order.timeline)) == (status, reason, steps)


def test_an_out_of_stock_answer_for_a_confirmed_order_is_ignored() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    steps = len(order.timeline)

    assert order.stock_rejected(T0, ["TEA-1"], "TEA-1 (asked 2, 0 left)") == []
    assert (order.status, len(order.timeline)) == (OrderStatus.CONFIRMED, steps)


def test_a_payment_authorized_after_a_lost_reservation_does_not_confirm_again() -> None:
    order = approved_and_reserved()
    order.payment_authorized(T0, "pay-1")
    order.reservation_lost(T0, ["TEA-1"], "")

    # Redelivered: the cancelled order stays cancelled; payment voids or refunds on OrderCancelled.
    assert order.payment_authorized(T0, "pay-1") == []
    assert (order.status, order.reason) == (OrderStatus.CANCELLED, OrderEndReason.RESERVATION_LOST)


def test_a_method_a_product_narrows_its_merchant_to_is_refused_naming_the_sku() -> None:
    wallet_tea = CatalogItem(
        "TEA-W", "Tea", "m-1", ProductKind.PHYSICAL, 100, payment_methods=frozenset({PaymentMethod.ALIPAY})
    )
    catalog = {**CATALOG, "TEA-W": wallet_tea}
    items = [RequestedItem("TEA-1", 1), RequestedItem("TEA-W", 1)]

    assert review_items(items, catalog, ALIPAY_ONLY, PaymentMethod.ALIPAY) == []
    assert review_items(items, catalog, {}, PaymentMethod.BANK_CARD) == [
        FieldIssue("payment.method", "bank_card is not accepted for TEA-W: it may be paid with alipay only")
    ]

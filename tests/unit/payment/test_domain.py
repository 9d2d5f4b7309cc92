"""The payment's rules, one transition at a time: facts in, decisions (changes, events, operations) out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.payment.domain import (
    Decision,
    Notice,
    Operation,
    OperationKind,
    Outcome,
    PayAction,
    Payment,
    PaymentStatus,
    ProviderReply,
    Readiness,
    RefundRefused,
    RefundState,
    auto_refund_id,
    payment_id_for,
)
from shared.contracts import (
    DeclineReason,
    OrderEndReason,
    PayActionType,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentRequested,
    PaymentVoided,
    RefundReason,
    RefundRequested,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=3)
DEADLINE = timedelta(seconds=30)
AMOUNT = 12_345
SEALED = "x25519.kid.sealed"
QR = PayAction(PayActionType.QR, "https://pay.example/qr/1")


def requested(
    method: PaymentMethod = PaymentMethod.BANK_CARD, sealed: str | None = SEALED
) -> PaymentRequested:
    return PaymentRequested(
        order_id="ord-1", customer_id="cus-1", amount_fen=AMOUNT, method=method, sealed_token=sealed
    )


def new(method: PaymentMethod = PaymentMethod.BANK_CARD) -> tuple[Payment, Operation]:
    payment, decision = Payment.request(
        requested(method), correlation_id="corr-1", now=NOW, deadline=DEADLINE, token_problem=None
    )
    [authorize] = decision.operations
    return payment, authorize


def authorized() -> Payment:
    payment, authorize = new()
    payment.answered(authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), NOW)
    return payment


def waiting() -> Payment:
    payment, authorize = new(PaymentMethod.WECHAT_PAY)
    payment.answered(authorize, ProviderReply(Outcome.PENDING, provider_ref="ref-1", action=QR), NOW)
    return payment


def captured() -> Payment:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations
    payment.answered(capture, ProviderReply(Outcome.CAPTURED, amount_fen=AMOUNT), NOW)
    return payment


def refund_request(
    refund_id: str = "rf-1", amount_fen: int = 1_000, currency: str = "CNY"
) -> RefundRequested:
    return RefundRequested(
        order_id="ord-1",
        refund_id=refund_id,
        customer_id="cus-1",
        amount_fen=amount_fen,
        currency=currency,
        reason="the lid was scratched",
    )


def notice(outcome: Outcome, amount_fen: int = AMOUNT, notification_id: str | None = "n-1") -> Notice:
    return Notice(outcome, amount_fen, provider_ref="ref-1", notification_id=notification_id)


def kinds(decision: Decision) -> list[tuple[OperationKind, str]]:
    return [(op.kind, op.key) for op in decision.operations]


def types(decision: Decision) -> list[str]:
    return [event.TYPE for event in decision.events]


def test_payment_id_is_deterministic_per_order() -> None:
    assert payment_id_for("ord-1") == payment_id_for("ord-1")
    assert payment_id_for("ord-1") != payment_id_for("ord-2")
    assert payment_id_for("ord-1").startswith("pay_")


# --- the request -----------------------------------------------------------------------------------


def test_a_request_queues_the_authorization_under_the_payment_id_with_the_sealed_token() -> None:
    payment, decision = Payment.request(
        requested(), correlation_id="corr-1", now=NOW, deadline=DEADLINE, token_problem=None
    )

    assert payment.status is PaymentStatus.REQUESTED
    assert decision.events == []
    [authorize] = decision.operations
    assert (authorize.kind, authorize.key, authorize.payment_id) == (
        OperationKind.AUTHORIZE,
        payment_id_for("ord-1"),
        payment_id_for("ord-1"),
    )
    assert (authorize.sealed_token, authorize.due_at, authorize.deadline_at) == (SEALED, NOW, NOW + DEADLINE)


def test_a_wallet_request_keeps_no_token() -> None:
    _, authorize = new(PaymentMethod.ALIPAY)

    assert authorize.sealed_token is None


def test_an_unusable_token_fails_the_payment_at_once_without_an_operation() -> None:
    payment, decision = Payment.request(
        requested(sealed="4111 1111 1111 1111"),
        correlation_id="corr-1",
        now=NOW,
        deadline=DEADLINE,
        token_problem="a card number was sent where a provider token belongs",
    )

    assert payment.status is PaymentStatus.FAILED
    assert decision.operations == []
    [failed] = decision.events
    assert isinstance(failed, PaymentFailed)
    assert (failed.reason, failed.detail) == (
        DeclineReason.INVALID_TOKEN,
        "a card number was sent where a provider token belongs",
    )
    assert "4111" not in str(payment)


# --- the authorization's answer ----------------------------------------------------------------


def test_an_authorized_card_is_announced_with_its_reference() -> None:
    payment, authorize = new()

    decision = payment.answered(authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), NOW)

    [event] = decision.events
    assert isinstance(event, PaymentAuthorized)
    assert (event.provider_ref, event.amount_fen, event.payment_id) == ("ref-1", AMOUNT, payment.payment_id)
    assert (payment.status, payment.provider_ref) == (PaymentStatus.AUTHORIZED, "ref-1")
    assert [e.status for e in payment.timeline] == [PaymentStatus.REQUESTED, PaymentStatus.AUTHORIZED]


@pytest.mark.parametrize(
    ("code", "reason", "detail"),
    [
        ("CARD_DECLINED", DeclineReason.CARD_DECLINED, "no"),
        ("INSUFFICIENT_FUNDS", DeclineReason.INSUFFICIENT_FUNDS, "no"),
        ("INVALID_TOKEN", DeclineReason.INVALID_TOKEN, "no"),
        ("DO_NOT_HONOR", DeclineReason.PROVIDER_DECLINED, "DO_NOT_HONOR no"),
        (None, DeclineReason.PROVIDER_DECLINED, "no"),
    ],
)
def test_a_decline_fails_with_a_stable_reason(code: str | None, reason: DeclineReason, detail: str) -> None:
    payment, authorize = new()

    decision = payment.answered(
        authorize, ProviderReply(Outcome.DECLINED, decline_code=code, message="no"), NOW
    )

    [failed] = decision.events
    assert isinstance(failed, PaymentFailed)
    assert (failed.reason, failed.detail) == (reason, detail)
    assert (payment.status, payment.reason) == (PaymentStatus.FAILED, reason)
    assert decision.operations == []


def test_a_wallet_waits_for_the_payer_with_the_pay_action() -> None:
    payment, authorize = new(PaymentMethod.WECHAT_PAY)

    decision = payment.answered(
        authorize, ProviderReply(Outcome.PENDING, provider_ref="ref-1", action=QR), NOW
    )

    [event] = decision.events
    assert isinstance(event, PaymentPending)
    assert (event.action_type, event.action_url, event.amount_fen) == (PayActionType.QR, QR.url, AMOUNT)
    assert (payment.status, payment.action) == (PaymentStatus.PENDING, QR)


def test_a_wallet_taken_at_once_is_authorized_and_captured() -> None:
    payment, authorize = new(PaymentMethod.ALIPAY)

    decision = payment.answered(authorize, ProviderReply(Outcome.CAPTURED, provider_ref="ref-1"), NOW)

    assert types(decision) == [PaymentAuthorized.TYPE, PaymentCaptured.TYPE]
    assert (payment.status, payment.captured_fen) == (PaymentStatus.CAPTURED, AMOUNT)


@pytest.mark.parametrize(
    "reply",
    [ProviderReply(Outcome.AUTHORIZED), ProviderReply(Outcome.PENDING, provider_ref="ref-1")],
    ids=["authorized-without-reference", "pending-without-action"],
)
def test_a_yes_without_what_it_takes_fails_and_releases_what_it_may_hold(reply: ProviderReply) -> None:
    payment, authorize = new()

    decision = payment.answered(authorize, reply, NOW)

    [failed] = decision.events
    assert isinstance(failed, PaymentFailed) and failed.reason is DeclineReason.PROVIDER_ERROR
    assert kinds(decision) == [(OperationKind.VOID, f"{payment.payment_id}:void")]
    assert decision.operations[0].announce is False


def test_a_repeated_answer_decides_nothing() -> None:
    payment, authorize = new()
    payment.answered(authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), NOW)

    assert (
        payment.answered(authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), LATER)
        == Decision()
    )
    assert payment.readiness(authorize) is Readiness.SKIP


# --- the deadline ----------------------------------------------------------------------------------


def test_no_answer_by_the_deadline_fails_with_provider_timeout_and_voids_in_case() -> None:
    payment, _ = new()

    decision = payment.provider_timed_out(NOW + DEADLINE)

    [failed] = decision.events
    assert isinstance(failed, PaymentFailed) and failed.reason is DeclineReason.PROVIDER_TIMEOUT
    [void] = decision.operations
    assert (void.kind, void.key, void.announce) == (OperationKind.VOID, f"{payment.payment_id}:void", False)
    assert payment.status is PaymentStatus.FAILED


def test_a_late_timeout_after_an_answer_decides_nothing() -> None:
    assert authorized().provider_timed_out(LATER) == Decision()


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    _, authorize = new()
    void = Operation("k", OperationKind.VOID, "pay", PaymentMethod.BANK_CARD, due_at=NOW)
    cap = timedelta(seconds=60)

    first = void.retried(NOW, jitter=0.0, max_backoff=cap, error="down")
    second = first.retried(NOW, jitter=0.999, max_backoff=cap, error="down")
    late = void
    for _ in range(20):
        late = late.retried(NOW, jitter=0.999, max_backoff=cap, error="down")

    assert (first.attempts, first.due_at - NOW) == (1, timedelta(seconds=0.25))
    assert timedelta(seconds=0.5) < second.due_at - NOW < timedelta(seconds=1)
    assert timedelta(seconds=30) < late.due_at - NOW <= cap
    assert late.last_error == "down"


def test_an_authorization_is_tried_last_at_its_deadline_and_then_given_up() -> None:
    _, authorize = new()
    slow = authorize
    for _ in range(10):
        slow = slow.retried(
            NOW + timedelta(seconds=29), jitter=0.5, max_backoff=timedelta(seconds=60), error="x"
        )

    assert slow.due_at == NOW + DEADLINE
    assert not authorize.gives_up(NOW + DEADLINE - timedelta(seconds=1))
    assert authorize.gives_up(NOW + DEADLINE)


# --- confirmation and capture --------------------------------------------------------------------


def test_a_confirmed_card_payment_is_captured_once() -> None:
    payment = authorized()

    decision = payment.confirm(NOW)

    [capture] = decision.operations
    assert (capture.kind, capture.key, capture.amount_fen) == (
        OperationKind.CAPTURE,
        f"{payment.payment_id}:capture",
        AMOUNT,
    )
    assert payment.confirm(LATER) == Decision(), "a second confirmation is the same capture"
    captured_now = payment.answered(capture, ProviderReply(Outcome.CAPTURED, amount_fen=AMOUNT), LATER)
    [event] = captured_now.events
    assert isinstance(event, PaymentCaptured) and event.amount_fen == AMOUNT
    assert (payment.status, payment.captured_fen) == (PaymentStatus.CAPTURED, AMOUNT)
    assert payment.answered(capture, ProviderReply(Outcome.CAPTURED), LATER) == Decision()


def test_a_confirmed_wallet_payment_was_taken_already() -> None:
    payment = waiting()
    payment.notice(notice(Outcome.CAPTURED), NOW)

    assert payment.confirm(LATER) == Decision()


def test_a_refused_capture_keeps_the_authorization_and_says_why() -> None:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations

    decision = payment.answered(capture, ProviderReply(Outcome.DECLINED, decline_code="EXPIRED"), LATER)

    assert decision.changed and decision.events == []
    assert (payment.status, payment.capturing) == (PaymentStatus.AUTHORIZED, False)
    assert "capture refused" in payment.timeline[-1].note


# --- the order's end ----------------------------------------------------------------------------


def test_cancelling_a_requested_payment_stops_its_authorization_and_closes_it_at_the_provider() -> None:
    payment, authorize = new()

    decision = payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, NOW)

    assert (payment.status, payment.reason) == (PaymentStatus.VOIDED, OrderEndReason.PAYMENT_TIMEOUT)
    assert decision.dropped == [authorize.key]
    assert kinds(decision) == [(OperationKind.VOID, f"{payment.payment_id}:void")]
    assert decision.events == []
    assert (
        payment.answered(authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref="r"), LATER) == Decision()
    )
    void = decision.operations[0]
    assert payment.answered(void, ProviderReply(Outcome.VOIDED), LATER).events == [], "the order never knew"


def test_cancelling_a_pending_payment_closes_it_at_the_provider() -> None:
    payment = waiting()

    decision = payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, NOW)

    assert payment.status is PaymentStatus.VOIDED
    assert decision.dropped == []
    assert kinds(decision) == [(OperationKind.VOID, f"{payment.payment_id}:void")]


def test_cancelling_an_authorized_payment_voids_it_and_says_so_once_released() -> None:
    payment = authorized()

    decision = payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, NOW)

    assert decision.events == [], "announced when the provider released it"
    [void] = decision.operations
    released = payment.answered(void, ProviderReply(Outcome.VOIDED), LATER)
    [event] = released.events
    assert isinstance(event, PaymentVoided)
    assert (event.reason, event.customer_id, event.late, event.amount_fen) == (
        OrderEndReason.CUSTOMER_CANCELLED,
        "cus-1",
        False,
        AMOUNT,
    )
    assert payment.status is PaymentStatus.VOIDED


def test_cancelling_while_the_capture_is_queued_drops_the_capture() -> None:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations

    decision = payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, LATER)

    assert decision.dropped == [capture.key]
    assert payment.readiness(capture) is Readiness.SKIP


def test_a_void_that_finds_the_money_taken_refunds_it() -> None:
    payment = authorized()
    [void] = payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, NOW).operations

    decision = payment.answered(void, ProviderReply(Outcome.CAPTURED, amount_fen=AMOUNT), LATER)

    [refund] = decision.operations
    assert (refund.kind, refund.key, refund.amount_fen) == (
        OperationKind.REFUND,
        auto_refund_id(payment.payment_id),
        AMOUNT,
    )
    assert decision.events == []
    assert payment.readiness(refund) is Readiness.READY
    done = payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER)
    [event] = done.events
    assert isinstance(event, PaymentRefunded)
    assert (event.reason, event.amount_fen, event.refunded_total_fen, event.captured_fen) == (
        RefundReason.ORDER_ENDED,
        AMOUNT,
        AMOUNT,
        AMOUNT,
    )


def test_a_void_of_a_closed_wallet_payment_that_finds_it_paid_refunds_it_as_a_late_payment() -> None:
    payment = waiting()
    [void] = payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, NOW).operations

    [refund] = payment.answered(void, ProviderReply(Outcome.CAPTURED), LATER).operations
    [event] = payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER).events

    assert isinstance(event, PaymentRefunded) and event.reason is RefundReason.LATE_PAYMENT
    assert payment.status is PaymentStatus.VOIDED, "it ended: the timeline says the money went back"
    assert payment.timeline[-1].status is PaymentStatus.REFUNDED
    assert (payment.captured_fen, payment.refunded_fen) == (AMOUNT, AMOUNT)


def test_cancelling_a_captured_payment_refunds_what_is_left() -> None:
    payment = captured()
    [partial] = payment.request_refund(refund_request(amount_fen=345), NOW).operations
    payment.answered(partial, ProviderReply(Outcome.REFUNDED), NOW)

    decision = payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, LATER)

    [refund] = decision.operations
    assert (refund.key, refund.amount_fen) == (auto_refund_id(payment.payment_id), AMOUNT - 345)
    [event] = payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER).events
    assert isinstance(event, PaymentRefunded)
    assert (event.reason, event.refunded_total_fen) == (RefundReason.ORDER_ENDED, AMOUNT)
    assert payment.status is PaymentStatus.REFUNDED


def test_cancelling_a_failed_payment_changes_only_the_record_of_why_the_order_ended() -> None:
    payment, authorize = new()
    payment.answered(authorize, ProviderReply(Outcome.DECLINED, decline_code="CARD_DECLINED"), NOW)

    decision = payment.cancel(OrderEndReason.PAYMENT_DECLINED, LATER)

    assert (decision.events, decision.operations) == ([], [])
    assert payment.order_ended is OrderEndReason.PAYMENT_DECLINED
    assert payment.status is PaymentStatus.FAILED


def test_a_second_cancellation_decides_nothing() -> None:
    payment = authorized()
    payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, NOW)

    assert payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, LATER) == Decision()


# --- refunds ------------------------------------------------------------------------------------


def test_partial_refunds_add_up_to_what_was_captured() -> None:
    payment = captured()

    first = payment.request_refund(refund_request("rf-1", 5_000), NOW)
    second = payment.request_refund(refund_request("rf-2", AMOUNT - 5_000), NOW)

    assert kinds(first) == [(OperationKind.REFUND, "rf-1")] and kinds(second) == [
        (OperationKind.REFUND, "rf-2")
    ]
    [one] = payment.answered(first.operations[0], ProviderReply(Outcome.REFUNDED), LATER).events
    [two] = payment.answered(second.operations[0], ProviderReply(Outcome.REFUNDED), LATER).events
    assert isinstance(one, PaymentRefunded) and isinstance(two, PaymentRefunded)
    assert (one.amount_fen, one.refunded_total_fen, one.reason, one.detail) == (
        5_000,
        5_000,
        RefundReason.REQUESTED,
        "the lid was scratched",
    )
    assert (two.amount_fen, two.refunded_total_fen, two.captured_fen) == (AMOUNT - 5_000, AMOUNT, AMOUNT)
    assert (payment.status, payment.refunded_fen, payment.refundable_fen) == (
        PaymentStatus.REFUNDED,
        AMOUNT,
        0,
    )


def test_a_refund_beyond_what_is_left_is_refused_naming_both_amounts_and_changes_nothing() -> None:
    payment = captured()
    payment.request_refund(refund_request("rf-1", 10_000), NOW)
    before = repr(payment)

    with pytest.raises(RefundRefused, match=r"asks 3000 fen .* has 2345 fen left"):
        payment.request_refund(refund_request("rf-2", 3_000), NOW)

    assert repr(payment) == before


def test_a_refund_of_an_uncaptured_payment_is_refused() -> None:
    with pytest.raises(RefundRefused, match="0 fen left"):
        authorized().request_refund(refund_request(), NOW)


def test_a_refund_in_another_currency_is_refused() -> None:
    with pytest.raises(RefundRefused, match="USD"):
        captured().request_refund(refund_request(currency="USD"), NOW)


def test_a_repeated_refund_id_refunds_once() -> None:
    payment = captured()
    [refund] = payment.request_refund(refund_request(), NOW).operations
    payment.answered(refund, ProviderReply(Outcome.REFUNDED), NOW)

    assert payment.request_refund(refund_request(), LATER) == Decision()
    assert payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER) == Decision()
    assert payment.refunded_fen == 1_000


def test_a_refund_asked_while_the_capture_is_queued_waits_for_it() -> None:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations
    [refund] = payment.request_refund(refund_request(amount_fen=AMOUNT), NOW).operations

    assert payment.readiness(refund) is Readiness.WAIT
    payment.answered(capture, ProviderReply(Outcome.CAPTURED), LATER)
    assert payment.readiness(refund) is Readiness.READY


def test_a_refund_whose_capture_was_refused_is_refused_too() -> None:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations
    [refund] = payment.request_refund(refund_request(), NOW).operations
    payment.answered(capture, ProviderReply(Outcome.DECLINED), LATER)

    assert payment.readiness(refund) is Readiness.REFUSE
    decision = payment.refuse_refund(refund.key, "the money to refund was not taken", LATER)
    assert decision.changed and decision.events == []
    assert payment.refunds[0].state is RefundState.REFUSED
    assert payment.readiness(refund) is Readiness.SKIP


def test_a_refund_the_provider_declines_is_refused_and_frees_its_amount() -> None:
    payment = captured()
    [refund] = payment.request_refund(refund_request(amount_fen=AMOUNT), NOW).operations

    decision = payment.answered(refund, ProviderReply(Outcome.DECLINED, message="too much"), LATER)

    assert decision.events == []
    assert payment.refunds[0].state is RefundState.REFUSED
    assert payment.refundable_fen == AMOUNT


# --- the provider's notices ---------------------------------------------------------------------


def test_a_wallet_paid_is_authorized_then_captured() -> None:
    payment = waiting()

    decision = payment.notice(notice(Outcome.CAPTURED), NOW)

    assert types(decision) == [PaymentAuthorized.TYPE, PaymentCaptured.TYPE]
    assert (payment.status, payment.captured_fen) == (PaymentStatus.CAPTURED, AMOUNT)
    assert [e.status for e in payment.timeline][-2:] == [PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED]


def test_a_notice_that_the_money_is_held_authorizes() -> None:
    payment = waiting()

    assert types(payment.notice(notice(Outcome.AUTHORIZED), NOW)) == [PaymentAuthorized.TYPE]
    assert payment.status is PaymentStatus.AUTHORIZED


def test_a_payer_who_declines_fails_the_payment() -> None:
    payment = waiting()

    decision = payment.notice(Notice(Outcome.DECLINED, AMOUNT, "ref-1", "n-1", "USER_CANCELLED", "no"), NOW)

    [failed] = decision.events
    assert isinstance(failed, PaymentFailed)
    assert (failed.reason, failed.detail) == (DeclineReason.PAYER_DECLINED, "USER_CANCELLED no")


def test_a_resent_notice_or_news_of_a_state_reached_decides_nothing() -> None:
    payment = waiting()
    payment.notice(notice(Outcome.CAPTURED, notification_id="n-1"), NOW)

    assert payment.notice(notice(Outcome.CAPTURED, notification_id="n-1"), LATER) == Decision()
    assert payment.notice(notice(Outcome.CAPTURED, notification_id="n-2"), LATER) == Decision()
    assert payment.notice(notice(Outcome.AUTHORIZED, notification_id=None), LATER) == Decision()
    assert payment.notices == ["n-1"]


def test_a_notice_while_the_authorization_is_queued_stops_it() -> None:
    payment, authorize = new(PaymentMethod.ALIPAY)

    decision = payment.notice(notice(Outcome.CAPTURED), NOW)

    assert decision.dropped == [authorize.key]
    assert payment.readiness(authorize) is Readiness.SKIP


def test_the_wrong_amount_taken_fails_the_payment_and_gives_it_back() -> None:
    payment = waiting()

    decision = payment.notice(notice(Outcome.CAPTURED, amount_fen=100), NOW)

    [failed] = decision.events
    assert isinstance(failed, PaymentFailed) and failed.reason is DeclineReason.AMOUNT_MISMATCH
    [refund] = decision.operations
    assert (refund.kind, refund.amount_fen) == (OperationKind.REFUND, 100)
    assert payment.readiness(refund) is Readiness.READY
    [event] = payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER).events
    assert isinstance(event, PaymentRefunded) and event.amount_fen == 100


def test_the_wrong_amount_held_fails_the_payment_and_releases_it_quietly() -> None:
    payment = waiting()

    decision = payment.notice(notice(Outcome.AUTHORIZED, amount_fen=AMOUNT + 1), NOW)

    assert types(decision) == [PaymentFailed.TYPE]
    [void] = decision.operations
    assert (void.kind, void.announce) == (OperationKind.VOID, False)


def test_money_taken_after_the_order_ended_is_refunded_as_a_late_payment() -> None:
    payment = waiting()
    payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, NOW)

    decision = payment.notice(notice(Outcome.CAPTURED), LATER)

    assert decision.events == []
    [refund] = decision.operations
    assert (refund.key, refund.amount_fen) == (auto_refund_id(payment.payment_id), AMOUNT)
    [event] = payment.answered(refund, ProviderReply(Outcome.REFUNDED), LATER).events
    assert isinstance(event, PaymentRefunded) and event.reason is RefundReason.LATE_PAYMENT
    assert payment.notice(notice(Outcome.CAPTURED, notification_id="n-2"), LATER) == Decision()


def test_money_held_after_the_payment_failed_is_released_and_the_release_said_late() -> None:
    payment, _ = new()
    payment.provider_timed_out(NOW + DEADLINE)

    decision = payment.notice(notice(Outcome.AUTHORIZED), LATER)

    [void] = decision.operations
    assert (void.kind, void.announce, void.late) == (OperationKind.VOID, True, True)
    [event] = payment.answered(void, ProviderReply(Outcome.VOIDED), LATER).events
    assert isinstance(event, PaymentVoided)
    assert (event.late, event.reason, event.customer_id) == (True, OrderEndReason.PROVIDER_TIMEOUT, "cus-1")
    assert payment.notice(notice(Outcome.AUTHORIZED, notification_id="n-2"), LATER) == Decision()


def test_a_late_decline_of_an_ended_payment_decides_nothing() -> None:
    payment = waiting()
    payment.cancel(OrderEndReason.PAYMENT_TIMEOUT, NOW)

    assert payment.notice(notice(Outcome.DECLINED), LATER) == Decision()


def test_a_capture_notice_for_an_authorized_card_captures_it() -> None:
    payment = authorized()
    [capture] = payment.confirm(NOW).operations

    decision = payment.notice(notice(Outcome.CAPTURED), LATER)

    assert types(decision) == [PaymentCaptured.TYPE]
    assert decision.dropped == [capture.key]
    assert payment.status is PaymentStatus.CAPTURED

"""Fraud rules and the scoring use case, with plain dicts standing in for faust tables."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from services.fraud.domain import OrderFacts, Reason, Rules, assess, recent_count, remember
from services.fraud.handlers import public_view, score_order
from shared.contracts import (
    Envelope,
    FraudDecision,
    OrderLine,
    OrderPlaced,
    PaymentMethod,
)
from shared.kafka import new_envelope
from tests.unit.samples import ADDRESS, T0

pytestmark = pytest.mark.unit

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


def facts(customer_id: str = "cust-1", total_fen: int = 10_000) -> OrderFacts:
    return OrderFacts.of(placed(customer_id, total_fen))


def envelope_of(event: OrderPlaced) -> Envelope:
    return new_envelope(event, source="order", correlation_id="corr-1")


def test_an_ordinary_order_is_approved_with_a_low_score() -> None:
    result = assess(facts(total_fen=1_000_000), 0, RULES)
    assert result.decision is FraudDecision.APPROVE
    assert result.reasons == []
    assert 0 <= result.score < 50


def test_a_blocked_customer_is_rejected() -> None:
    result = assess(facts("cust-blocked-demo"), 0, RULES)
    assert (result.decision, result.score, result.reasons) == (
        FraudDecision.REJECT,
        100,
        [Reason.BLOCKED_CUSTOMER],
    )


@pytest.mark.parametrize(
    ("total_fen", "decision", "reasons"),
    [
        (2_000_000, FraudDecision.APPROVE, []),
        (2_000_001, FraudDecision.REVIEW, [Reason.AMOUNT_HIGH]),
        (5_000_000, FraudDecision.REVIEW, [Reason.AMOUNT_HIGH]),
        (5_000_001, FraudDecision.REJECT, [Reason.AMOUNT_OVER_LIMIT]),
    ],
)
def test_amount_thresholds_are_exclusive(total_fen: int, decision: FraudDecision, reasons: list[str]) -> None:
    result = assess(facts(total_fen=total_fen), 0, RULES)
    assert (result.decision, result.reasons) == (decision, reasons)


@pytest.mark.parametrize(("recent", "decision"), [(4, FraudDecision.APPROVE), (5, FraudDecision.REJECT)])
def test_velocity_rejects_the_order_after_the_allowed_number(recent: int, decision: FraudDecision) -> None:
    result = assess(facts(), recent, RULES)
    assert result.decision is decision
    assert (Reason.VELOCITY in result.reasons) is (decision is FraudDecision.REJECT)


def test_reject_beats_review_and_every_reason_is_reported() -> None:
    result = assess(facts("cust-blocked-demo", total_fen=3_000_000), 5, RULES)
    assert result.decision is FraudDecision.REJECT
    assert result.reasons == [Reason.BLOCKED_CUSTOMER, Reason.AMOUNT_HIGH, Reason.VELOCITY]
    assert result.score == 100


def test_review_and_velocity_together_reject() -> None:
    result = assess(facts(total_fen=3_000_000), 5, RULES)
    assert result.decision is FraudDecision.REJECT
    assert result.score == 100


def test_recent_count_covers_only_the_window_and_other_orders() -> None:
    at = 10_000.0
    history = {"same": at, "inside": at - 599, "edge": at - 600, "old": at - 601}
    assert recent_count(history, "same", at, 600) == 1


def test_remember_adds_the_order_and_drops_what_fell_out_of_the_window() -> None:
    history = {"old": 0.0, "recent": 500.0}
    assert remember(history, "new", 700.0, 600) == {"recent": 500.0, "new": 700.0}


def test_score_order_counts_the_customers_orders_in_the_window() -> None:
    scores: dict[str, object] = {}
    history: dict[str, object] = {}
    decisions = [
        score_order(
            envelope_of(event := placed(at=T0 + timedelta(seconds=i))),
            event,
            scores=scores,
            history=history,
            rules=RULES,
        ).envelope.data["decision"]
        for i in range(6)
    ]
    assert decisions == ["approve"] * 5 + ["reject"]
    late = placed(at=T0 + timedelta(seconds=5 + 600))
    outcome = score_order(envelope_of(late), late, scores=scores, history=history, rules=RULES)
    assert outcome.envelope.data["decision"] == "approve"


def test_a_redelivered_order_gets_the_same_event_and_is_not_counted_twice() -> None:
    scores: dict[str, object] = {}
    history: dict[str, object] = {}
    event = placed()
    cause = envelope_of(event)
    first = score_order(cause, event, scores=scores, history=history, rules=RULES)
    again = score_order(cause, event, scores=scores, history=history, rules=RULES)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.envelope == first.envelope
    assert first.envelope.causation_id == cause.id
    assert first.envelope.correlation_id == "corr-1"
    assert history["cust-1"] == {event.order_id: T0.timestamp()}


def test_public_view_shows_the_decision_and_the_event_id() -> None:
    scores: dict[str, object] = {}
    event = placed("cust-blocked-demo")
    scored = score_order(envelope_of(event), event, scores=scores, history={}, rules=RULES)
    view = public_view(scores[event.order_id])
    assert view["decision"] == "reject"
    assert view["reasons"] == [Reason.BLOCKED_CUSTOMER]
    assert view["event_id"] == scored.envelope.id


def test_settings_read_thresholds_and_blocklist_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.fraud.main import FraudSettings

    monkeypatch.setenv("FRAUD_BLOCKED_CUSTOMERS", " a, b ,,")
    monkeypatch.setenv("FRAUD_VELOCITY_MAX_ORDERS", "2")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "h1:9092,h2:9093")
    settings = FraudSettings()
    assert settings.rules().blocked_customers == frozenset({"a", "b"})
    assert settings.rules().velocity_max_orders == 2
    assert settings.broker_urls() == ["kafka://h1:9092", "kafka://h2:9093"]

"""Fraud rules: the facts of one order and the customer's recent history in, a decision out."""

from __future__ import annotations

import pytest

from services.fraud.domain import OrderFacts, assess, recent_count, remember
from shared.contracts import FraudDecision, FraudReason
from tests.unit.fraud.factories import RULES, placed

pytestmark = pytest.mark.unit


def facts(customer_id: str = "cust-1", total_fen: int = 10_000) -> OrderFacts:
    return OrderFacts.of(placed(customer_id, total_fen))


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
        [FraudReason.BLOCKED_CUSTOMER],
    )


@pytest.mark.parametrize(
    ("total_fen", "decision", "reasons"),
    [
        (2_000_000, FraudDecision.APPROVE, []),
        (2_000_001, FraudDecision.REVIEW, [FraudReason.AMOUNT_HIGH]),
        (5_000_000, FraudDecision.REVIEW, [FraudReason.AMOUNT_HIGH]),
        (5_000_001, FraudDecision.REJECT, [FraudReason.AMOUNT_OVER_LIMIT]),
    ],
)
def test_amount_thresholds_are_exclusive(
    total_fen: int, decision: FraudDecision, reasons: list[FraudReason]
) -> None:
    result = assess(facts(total_fen=total_fen), 0, RULES)
    assert (result.decision, result.reasons) == (decision, reasons)


@pytest.mark.parametrize(("recent", "decision"), [(4, FraudDecision.APPROVE), (5, FraudDecision.REJECT)])
def test_velocity_rejects_the_order_after_the_allowed_number(recent: int, decision: FraudDecision) -> None:
    result = assess(facts(), recent, RULES)
    assert result.decision is decision
    assert (FraudReason.VELOCITY in result.reasons) is (decision is FraudDecision.REJECT)


def test_reject_beats_review_and_every_reason_is_reported() -> None:
    result = assess(facts("cust-blocked-demo", total_fen=3_000_000), 5, RULES)
    assert result.decision is FraudDecision.REJECT
    assert result.reasons == [FraudReason.BLOCKED_CUSTOMER, FraudReason.AMOUNT_HIGH, FraudReason.VELOCITY]
    assert result.score == 100


def test_review_and_velocity_together_reject() -> None:
    result = assess(facts(total_fen=3_000_000), 5, RULES)
    assert result.decision is FraudDecision.REJECT
    assert result.score == 100


def test_reasons_are_the_contract_codes_clients_match_on() -> None:
    result = assess(facts("cust-blocked-demo", total_fen=6_000_000), 5, RULES)
    assert [str(reason) for reason in result.reasons] == ["BLOCKED_CUSTOMER", "AMOUNT_OVER_LIMIT", "VELOCITY"]


def test_recent_count_covers_only_the_window_and_other_orders() -> None:
    at = 10_000.0
    history = {"same": at, "inside": at - 599, "edge": at - 600, "old": at - 601}
    assert recent_count(history, "same", at, 600) == 1


def test_remember_adds_the_order_and_drops_what_fell_out_of_the_window() -> None:
    history = {"old": 0.0, "recent": 500.0}
    assert remember(history, "new", 700.0, 600) == {"recent": 500.0, "new": 700.0}

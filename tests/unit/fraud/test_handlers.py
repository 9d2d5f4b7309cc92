"""The scoring handler, applied through HANDLERS to a batch whose tables are plain dicts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.fraud.handlers import HANDLERS, SERVICE, FraudBatch, public_view
from shared.contracts import (
    Envelope,
    FraudReason,
    FraudScored,
    OrderConfirmed,
    OrderPlaced,
    decode_data,
)
from shared.kafka import Delivery, topic_for
from tests.unit.fraud.factories import RULES, envelope_of, placed
from tests.unit.samples import T0

pytestmark = pytest.mark.unit


class Tables:
    def __init__(self) -> None:
        self.scores: dict[str, Any] = {}
        self.history: dict[str, Any] = {}

    def batch(self) -> FraudBatch:
        return FraudBatch(self.scores, self.history, RULES)


def delivered(envelope: Envelope) -> Delivery:
    return Delivery(envelope, decode_data(envelope), topic_for(envelope), 0, 0)


def score(tables: Tables, cause: Envelope) -> FraudBatch:
    batch = tables.batch()
    HANDLERS.dispatch(batch, [delivered(cause)])
    return batch


def only_answer(batch: FraudBatch) -> FraudScored:
    [answer] = batch.replies.outgoing
    event = FraudScored.model_validate(answer.data)
    assert answer.type == FraudScored.TYPE and answer.subject == event.order_id
    return event


def test_a_placed_order_is_answered_with_its_score_as_a_reply() -> None:
    cause = envelope_of(placed())
    batch = score(Tables(), cause)
    [answer] = batch.replies.outgoing
    assert only_answer(batch).decision == "approve"
    assert (answer.causation_id, answer.correlation_id, answer.source) == (cause.id, "corr-1", SERVICE)
    assert batch.redelivered == set()


def test_the_customers_orders_in_the_window_are_counted() -> None:
    tables = Tables()
    decisions = [
        only_answer(score(tables, envelope_of(placed(at=T0 + timedelta(seconds=i))))).decision
        for i in range(6)
    ]
    assert decisions == ["approve"] * 5 + ["reject"]
    late = only_answer(score(tables, envelope_of(placed(at=T0 + timedelta(seconds=5 + 600)))))
    assert late.decision == "approve"
    other = only_answer(score(tables, envelope_of(placed("cust-2", at=T0 + timedelta(seconds=6)))))
    assert other.decision == "approve", "velocity is counted per customer"


def test_a_redelivered_order_gets_the_same_event_and_is_not_counted_twice() -> None:
    tables = Tables()
    event = placed()
    cause = envelope_of(event)
    first = score(tables, cause)
    again = score(tables, cause)
    assert again.replies.outgoing == first.replies.outgoing
    assert (first.redelivered, again.redelivered) == (set(), {cause.id})
    assert tables.history["cust-1"] == {event.order_id: T0.timestamp()}


def test_public_view_shows_the_decision_and_the_event_id() -> None:
    tables = Tables()
    event = placed("cust-blocked-demo")
    [answer] = score(tables, envelope_of(event)).replies.outgoing
    view = public_view(tables.scores[event.order_id])
    assert view["decision"] == "reject"
    assert view["reasons"] == [FraudReason.BLOCKED_CUSTOMER]
    assert view["event_id"] == answer.id


def test_fraud_handles_placed_orders_only() -> None:
    assert HANDLERS.event_types == frozenset({OrderPlaced})
    confirmed = OrderConfirmed(
        order_id="o-1", order_no="N-1", customer_id="c", lines=[], total_fen=1, payment_id="p"
    )
    tables = Tables()
    batch = tables.batch()
    HANDLERS.dispatch(batch, [delivered(envelope_of(confirmed))])
    assert batch.replies.outgoing == [] and tables.scores == {}

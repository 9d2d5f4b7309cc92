"""Use cases: an OrderPlaced in, its FraudScored out, with the velocity and result tables updated."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from services.fraud.domain import OrderFacts, Rules, assess, recent_count, remember
from shared.contracts import Envelope, Event, FraudScored, OrderPlaced
from shared.kafka import reply_to

SERVICE = "fraud"

FRAUD_DECISIONS = Counter("fraud_decisions_total", "Orders scored, by decision", ["decision"])

# Table values are JSON: scores maps order id -> {"envelope": the emitted FraudScored envelope};
# history maps customer id -> {order id: placed_at as epoch seconds}.
Table = MutableMapping[str, Any]


@dataclass(frozen=True)
class Scored:
    envelope: Envelope
    duplicate: bool


def score_order(
    cause: Envelope, event: OrderPlaced, *, scores: Table, history: Table, rules: Rules
) -> Scored:
    """Score an order once; a redelivery gets the stored FraudScored back, uncounted."""
    stored = scores.get(event.order_id)
    if stored is not None:
        return Scored(Envelope.model_validate(stored["envelope"]), duplicate=True)

    order = OrderFacts.of(event)
    past: dict[str, float] = history.get(order.customer_id) or {}
    assessment = assess(
        order, recent_count(past, order.order_id, order.placed_at_s, rules.velocity_window_s), rules
    )
    envelope = reply_to(
        cause,
        FraudScored(
            order_id=order.order_id,
            decision=assessment.decision,
            score=assessment.score,
            reasons=assessment.reasons,
        ),
        source=SERVICE,
    )
    # Faust tables log a key when it is assigned, so the new history is assigned whole.
    history[order.customer_id] = remember(past, order.order_id, order.placed_at_s, rules.velocity_window_s)
    scores[order.order_id] = {"envelope": envelope.model_dump(mode="json")}
    FRAUD_DECISIONS.labels(assessment.decision.value).inc()
    return Scored(envelope, duplicate=False)


def public_view(stored: Any) -> dict[str, Any]:
    """What `GET /v1/fraud/scores/{order_id}` shows of a stored result."""
    envelope = Envelope.model_validate(stored["envelope"])
    return {
        **envelope.data,
        "event_id": envelope.id,
        "scored_at": envelope.time.isoformat(),
        "correlation_id": envelope.correlation_id,
    }


Handler = Callable[..., Scored]

HANDLERS: dict[type[Event], Handler] = {OrderPlaced: score_order}

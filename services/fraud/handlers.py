"""Use cases: an OrderPlaced in, its FraudScored out, with the velocity and score tables updated."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from services.fraud.domain import OrderFacts, Rules, assess, recent_count, remember
from shared.contracts import Envelope, Event, FraudScored, OrderPlaced
from shared.handlers import Handlers, Replies

SERVICE = "fraud"

# Table values are JSON: scores maps order id -> {"envelope": the emitted FraudScored envelope};
# history maps customer id -> {order id: placed_at as epoch seconds}.
Table = MutableMapping[str, Any]


@dataclass
class FraudBatch:
    """Scoring's view of the orders it is given: the tables it reads and updates, and its answers."""

    scores: Table
    history: Table
    rules: Rules
    replies: Replies = field(default_factory=lambda: Replies(SERVICE))
    # Ids of the causes answered with a score stored earlier: redeliveries, not new decisions.
    redelivered: set[str] = field(default_factory=set)


def customers_to_score(event: Event) -> list[str]:
    """Whose history an event is scored against: the routing agent sends it to that one's partition."""
    if isinstance(event, OrderPlaced):
        return [event.customer_id]
    return []


def on_order_placed(batch: FraudBatch, event: OrderPlaced, cause: Envelope) -> None:
    """Score an order once; a redelivery is answered with the FraudScored it got the first time."""
    stored = batch.scores.get(event.order_id)
    if stored is not None:
        batch.replies.outgoing.append(Envelope.model_validate(stored["envelope"]))
        batch.redelivered.add(cause.id)
        return

    order = OrderFacts.of(event)
    window_s = batch.rules.velocity_window_s
    past: dict[str, float] = batch.history.get(order.customer_id) or {}
    assessment = assess(order, recent_count(past, order.order_id, order.placed_at_s, window_s), batch.rules)
    batch.replies.reply(
        cause,
        [
            FraudScored(
                order_id=order.order_id,
                decision=assessment.decision,
                score=assessment.score,
                reasons=assessment.reasons,
            )
        ],
    )
    answer = batch.replies.outgoing[-1]
    # Faust tables log a key when it is assigned, so the new history is assigned whole.
    batch.history[order.customer_id] = remember(past, order.order_id, order.placed_at_s, window_s)
    batch.scores[order.order_id] = {"envelope": answer.model_dump(mode="json")}


def public_view(stored: Any) -> dict[str, Any]:
    """What `GET /v1/fraud/scores/{order_id}` shows of a stored result."""
    envelope = Envelope.model_validate(stored["envelope"])
    return {
        **envelope.data,
        "event_id": envelope.id,
        "scored_at": envelope.time.isoformat(),
        "correlation_id": envelope.correlation_id,
    }


HANDLERS = Handlers[FraudBatch]().on(OrderPlaced, on_order_placed)

"""Fraud rules: the facts of one order and the customer's recent history in, a decision out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.contracts import FraudDecision, FraudReason, OrderPlaced, PaymentMethod, ShippingAddress

# What each reason adds to the score, and the decision it forces on its own.
_WEIGHTS: dict[FraudReason, tuple[int, FraudDecision]] = {
    FraudReason.BLOCKED_CUSTOMER: (100, FraudDecision.REJECT),
    FraudReason.AMOUNT_OVER_LIMIT: (90, FraudDecision.REJECT),
    FraudReason.VELOCITY: (80, FraudDecision.REJECT),
    FraudReason.AMOUNT_HIGH: (50, FraudDecision.REVIEW),
}
_SEVERITY = {FraudDecision.APPROVE: 0, FraudDecision.REVIEW: 1, FraudDecision.REJECT: 2}
# An order with no reason still carries a little risk in proportion to its amount, capped well
# below the review weight so that the score alone never contradicts the decision.
_AMOUNT_SCORE_CAP = 40


@dataclass(frozen=True)
class Rules:
    review_above_fen: int
    reject_above_fen: int
    velocity_max_orders: int
    velocity_window_s: float
    blocked_customers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OrderFacts:
    """What fraud knows about an order when it scores it."""

    order_id: str
    customer_id: str
    total_fen: int
    quantities: tuple[int, ...]
    payment_method: PaymentMethod
    shipping_address: ShippingAddress
    placed_at_s: float

    @classmethod
    def of(cls, event: OrderPlaced) -> OrderFacts:
        return cls(
            order_id=event.order_id,
            customer_id=event.customer_id,
            total_fen=event.total_fen,
            quantities=tuple(line.quantity for line in event.lines),
            payment_method=event.payment_method,
            shipping_address=event.shipping_address,
            placed_at_s=event.placed_at.timestamp(),
        )


@dataclass(frozen=True)
class Assessment:
    decision: FraudDecision
    score: int
    reasons: list[FraudReason] = field(default_factory=list)


def assess(order: OrderFacts, recent_orders: int, rules: Rules) -> Assessment:
    """Score one order; `recent_orders` counts the customer's other orders inside the window."""
    reasons: list[FraudReason] = []
    if order.customer_id in rules.blocked_customers:
        reasons.append(FraudReason.BLOCKED_CUSTOMER)
    if order.total_fen > rules.reject_above_fen:
        reasons.append(FraudReason.AMOUNT_OVER_LIMIT)
    elif order.total_fen > rules.review_above_fen:
        reasons.append(FraudReason.AMOUNT_HIGH)
    if recent_orders >= rules.velocity_max_orders:
        reasons.append(FraudReason.VELOCITY)

    decision = max(
        (_WEIGHTS[reason][1] for reason in reasons),
        key=_SEVERITY.__getitem__,
        default=FraudDecision.APPROVE,
    )
    amount_score = min(
        _AMOUNT_SCORE_CAP, _AMOUNT_SCORE_CAP * order.total_fen // max(rules.review_above_fen, 1)
    )
    score = min(100, max(amount_score, sum(_WEIGHTS[reason][0] for reason in reasons)))
    return Assessment(decision=decision, score=score, reasons=reasons)


def recent_count(history: Mapping[str, float], order_id: str, at_s: float, window_s: float) -> int:
    """The customer's orders other than `order_id` placed in the window that ends at `at_s`."""
    return sum(
        1 for other, placed in history.items() if other != order_id and at_s - window_s < placed <= at_s
    )


def remember(history: Mapping[str, float], order_id: str, at_s: float, window_s: float) -> dict[str, float]:
    """The history with this order added and everything too old to matter again dropped."""
    newest = max([at_s, *history.values()])
    kept = {other: placed for other, placed in history.items() if placed > newest - window_s}
    kept[order_id] = at_s
    return kept

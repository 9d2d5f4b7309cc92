"""Correctness under load, read from the answers, from `order.events` and from inventory's stock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import Answer
from bench.tap import OrderEventsTap

SHOWN = 5  # ids quoted in a failed check's detail


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Outcomes:
    orders: int
    confirmed: int
    rejected: int
    cancelled: int
    still_open: int
    confirmed_units: int


def accepted_ids(answers: Sequence[Answer]) -> list[str]:
    return [answer.order_id for answer in answers if answer.order_id is not None]


def orders_placed(tap: OrderEventsTap, answers: Sequence[Answer]) -> list[str]:
    """The orders these requests made: every accepted one, then any placed by a request that got no
    answer (a timeout may come after the order was taken; it must still end, and its stock counts)."""
    accepted = accepted_ids(answers)
    known = set(accepted)
    unanswered = [
        order_id
        for answer in answers
        if answer.order_id is None
        for order_id in sorted(tap.orders_of_customer.get(answer.customer_id, ()))
        if order_id not in known
    ]
    return accepted + unanswered


def outcomes(tap: OrderEventsTap, order_ids: Sequence[str]) -> Outcomes:
    trails = [tap.trail(order_id) for order_id in order_ids]
    kinds = Counter(outcome for trail in trails for outcome in trail.outcomes)
    return Outcomes(
        orders=len(order_ids),
        confirmed=kinds["confirmed"],
        rejected=kinds["rejected"],
        cancelled=kinds["cancelled"],
        still_open=sum(1 for trail in trails if not trail.outcomes),
        confirmed_units=sum(trail.confirmed_units for trail in trails if trail.endings["confirmed"]),
    )


def order_checks(tap: OrderEventsTap, answers: Sequence[Answer]) -> list[Check]:
    accepted = accepted_ids(answers)
    placed = orders_placed(tap, answers)
    ended = outcomes(tap, placed)
    several_outcomes = [o for o in placed if len(tap.trail(o).outcomes) > 1]
    confirmed_twice = [o for o in placed if len(tap.trail(o).endings["confirmed"]) > 1]
    placed_twice = [o for o in placed if len(tap.trail(o).placed) > 1]
    never_placed = [o for o in accepted if not tap.trail(o).placed]
    repeated_ids = [o for o, n in Counter(accepted).items() if n > 1]
    customers_with_several = [
        answer.customer_id
        for answer in answers
        if len(tap.orders_of_customer.get(answer.customer_id, ())) > 1
    ]
    unanswered = len(placed) - len(accepted)
    total = ended.confirmed + ended.rejected + ended.cancelled
    return [
        Check(
            "accepted = confirmed + rejected + cancelled",
            total == ended.orders and not ended.still_open and not several_outcomes,
            f"{len(accepted)} accepted"
            + (f" + {unanswered} placed by requests that got no answer" if unanswered else "")
            + f": {ended.confirmed} confirmed + {ended.rejected} rejected + {ended.cancelled} cancelled, "
            f"{ended.still_open} still open" + _ids(", several outcomes", several_outcomes),
        ),
        Check(
            "no order confirmed twice",
            not confirmed_twice,
            "distinct OrderConfirmed ids per order ≤ 1" + _ids(", confirmed twice", confirmed_twice),
        ),
        Check(
            "no duplicate order",
            not (placed_twice or repeated_ids or customers_with_several or never_placed),
            f"{len(set(accepted))} distinct order ids in {len(accepted)} acceptances, one per customer"
            + _ids(", placed twice", placed_twice)
            + _ids(", id answered twice", repeated_ids)
            + _ids(", customers with several orders", customers_with_several)
            + _ids(", accepted but never on order.events", never_placed),
        ),
    ]


def stock_check(available: int, reserved: int, expected_available: int) -> Check:
    return Check(
        "stock conserved",
        available == expected_available and reserved == 0,
        f"available {available} (expected {expected_available} = initial − confirmed units), "
        f"reserved {reserved} (expected 0)",
    )


def _ids(label: str, ids: Sequence[str]) -> str:
    if not ids:
        return ""
    more = f" (+{len(ids) - SHOWN} more)" if len(ids) > SHOWN else ""
    return f"{label}: {', '.join(ids[:SHOWN])}{more}"

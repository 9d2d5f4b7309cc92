"""Use cases: a fact about an order in, its merchant's minute updated once and published as it stands."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.analytics.domain import (
    Contribution,
    Totals,
    add,
    merchants_of,
    minute_of,
    sale,
    snapshot,
    snapshot_id,
    too_late,
)
from shared.contracts import CURRENCY, Envelope, Event, OrderConfirmed
from shared.handlers import Handlers
from shared.kafka import new_envelope

SERVICE = "analytics"

# Faust tumbling-window tables, addressed by (key, window range) with the range their own window
# gives for a minute's start: totals maps (merchant id, range) -> Totals.as_json(); counted maps
# ("merchant id/event id", range) -> True for every fact already added to that minute.
Table = MutableMapping[Any, Any]
WindowRange = tuple[float, float]


@dataclass
class Tally:
    """Counting's view of one record of the by-merchant topic: whose minute it counts in, the tables
    it reads and updates, and the minutes to publish."""

    merchant_id: str
    totals: Table
    counted: Table
    window_of: Callable[[float], WindowRange]
    retention: timedelta
    now: datetime
    outgoing: list[Envelope] = field(default_factory=list)
    # Already counted (a redelivery): published again as the minute stands, not added twice.
    redelivered: bool = False
    # Older than the kept minutes: not counted and not published (domain.too_late).
    late: bool = False


def merchants_to_count(event: Event) -> list[str]:
    """The merchants whose minutes a fact changes: the routing agent sends it to each one's partition."""
    if isinstance(event, OrderConfirmed):
        return merchants_of(event.lines)
    return []


def on_order_confirmed(tally: Tally, event: OrderConfirmed, cause: Envelope) -> None:
    """A confirmed order adds one order and the merchant's line totals to the minute it was confirmed in."""
    count(tally, sale(tally.merchant_id, event.lines), cause, currency=event.currency)


def count(tally: Tally, contribution: Contribution, cause: Envelope, *, currency: str = CURRENCY) -> None:
    """Add one fact (a signed amount: a refund will be negative) to its merchant's minute once."""
    if too_late(cause.time, tally.now, tally.retention):
        tally.late = True
        return
    minute = minute_of(cause.time)
    window = tally.window_of(minute.timestamp())
    merchant_id = contribution.merchant_id
    key, seen = (merchant_id, window), (f"{merchant_id}/{cause.id}", window)
    totals = Totals.from_json(tally.totals.get(key))
    if seen in tally.counted:
        tally.redelivered = True
    else:
        totals = add(totals, contribution)
        # Faust tables log a key when it is assigned, so the new totals are assigned whole.
        tally.totals[key] = totals.as_json()
        tally.counted[seen] = True
    revenue = snapshot(merchant_id, minute, totals, currency)
    tally.outgoing.append(
        new_envelope(
            revenue,
            source=SERVICE,
            correlation_id=cause.correlation_id,
            causation_id=cause.id,
            event_id=snapshot_id(revenue),
        )
    )


HANDLERS = Handlers[Tally]().on(OrderConfirmed, on_order_confirmed)

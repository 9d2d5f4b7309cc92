"""Revenue and order counts per merchant per minute: the rules, apart from faust and Kafka.

A minute is a tumbling window of business time: the envelope `time` of the fact counted (when the
platform says it happened), never when analytics read it, so a replay or a lagging consumer puts
every order in the same minute as the first reading did.

What a fact adds to a merchant's minute is a `Contribution` with a signed amount: a confirmed order
adds one order and the merchant's line totals; a refund (once the platform emits refund events)
will add a negative amount, counted as refunded in the minute the refund happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import CURRENCY, MerchantRevenue, OrderLine

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Totals:
    """One merchant's minute so far."""

    orders: int = 0
    revenue_fen: int = 0
    refunded_fen: int = 0

    @property
    def net_fen(self) -> int:
        return self.revenue_fen - self.refunded_fen

    def as_json(self) -> dict[str, int]:
        return {"orders": self.orders, "revenue_fen": self.revenue_fen, "refunded_fen": self.refunded_fen}

    @classmethod
    def from_json(cls, stored: Mapping[str, Any] | None) -> Totals:
        if stored is None:
            return cls()
        return cls(
            orders=int(stored["orders"]),
            revenue_fen=int(stored["revenue_fen"]),
            refunded_fen=int(stored["refunded_fen"]),
        )


@dataclass(frozen=True)
class Contribution:
    """What one fact adds to one merchant's minute: orders counted and a signed amount in fen
    (positive: revenue; negative: a refund)."""

    merchant_id: str
    orders: int
    amount_fen: int


def add(totals: Totals, contribution: Contribution) -> Totals:
    """The minute with one more fact counted."""
    revenue, refunded = totals.revenue_fen, totals.refunded_fen
    if contribution.amount_fen >= 0:
        revenue += contribution.amount_fen
    else:
        refunded -= contribution.amount_fen
    return Totals(orders=totals.orders + contribution.orders, revenue_fen=revenue, refunded_fen=refunded)


def merchants_of(lines: Iterable[OrderLine]) -> list[str]:
    """The merchants with a line in an order, each once, in the order they first appear."""
    return list(dict.fromkeys(line.merchant_id for line in lines))


def sale(merchant_id: str, lines: Iterable[OrderLine]) -> Contribution:
    """A confirmed order as one merchant counts it: one order, and the total of that merchant's lines."""
    own = [line for line in lines if line.merchant_id == merchant_id]
    if not own:
        raise ValueError(f"the order has no line of merchant {merchant_id!r}")
    return Contribution(merchant_id, orders=1, amount_fen=sum(line.line_total_fen for line in own))


def minute_of(at: datetime) -> datetime:
    """The start of the minute `at` falls in, in UTC (a time without a zone is taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def too_late(at: datetime, now: datetime, retention: timedelta) -> bool:
    """Whether a fact's minute is older than the kept minutes: it can no longer be added to the
    minute's total (forgotten), and a total started afresh would overwrite the true one downstream."""
    return minute_of(at) + WINDOW <= minute_of(now) - retention


def snapshot(merchant_id: str, minute: datetime, totals: Totals, currency: str = CURRENCY) -> MerchantRevenue:
    """The published record of a merchant's minute as it stands."""
    return MerchantRevenue(
        merchant_id=merchant_id,
        window_start=minute,
        window_end=minute + WINDOW,
        orders=totals.orders,
        revenue_fen=totals.revenue_fen,
        refunded_fen=totals.refunded_fen,
        currency=currency,
    )


def snapshot_id(revenue: MerchantRevenue) -> str:
    """The same id for the same totals of the same minute, so that publishing a minute again after a
    redelivery emits the event readers already have (totals only grow, so no two states share one)."""
    name = (
        f"analytics.merchant_revenue/{revenue.merchant_id}/{revenue.window_start.isoformat()}/"
        f"{revenue.orders}/{revenue.revenue_fen}/{revenue.refunded_fen}"
    )
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@dataclass
class RevenueView:
    """The latest published totals per merchant and minute, as every analytics replica reads them
    back from analytics.merchant-revenue to answer the API, whichever replica counted them.

    Within one merchant (one partition), the later record is the later state: it replaces the earlier.
    Minutes older than `retention` before `now` are dropped."""

    retention: timedelta
    _minutes: dict[str, dict[datetime, MerchantRevenue]] = field(default_factory=dict)

    def apply(self, revenue: MerchantRevenue, now: datetime) -> None:
        if too_late(revenue.window_start, now, self.retention):
            return
        self._minutes.setdefault(revenue.merchant_id, {})[minute_of(revenue.window_start)] = revenue

    def merchant(self, merchant_id: str, start: datetime, end: datetime) -> list[MerchantRevenue]:
        """The merchant's minutes that start in [start, end), oldest first."""
        minutes = self._minutes.get(merchant_id, {})
        return [minutes[minute] for minute in sorted(minutes) if start <= minute < end]

    def minute(self, minute: datetime) -> list[MerchantRevenue]:
        """Every merchant's totals for one minute, by merchant id."""
        start = minute_of(minute)
        found = (minutes.get(start) for _, minutes in sorted(self._minutes.items()))
        return [revenue for revenue in found if revenue is not None]

    def forget_before(self, now: datetime) -> int:
        """Drop the minutes older than the retention; how many were dropped."""
        dropped = 0
        for merchant_id in list(self._minutes):
            minutes = self._minutes[merchant_id]
            for minute in [minute for minute in minutes if too_late(minute, now, self.retention)]:
                del minutes[minute]
                dropped += 1
            if not minutes:
                del self._minutes[merchant_id]
        return dropped


def summed(rows: Iterable[MerchantRevenue]) -> Totals:
    """The totals over several minutes (or merchants)."""
    totals = Totals()
    for row in rows:
        totals = Totals(
            orders=totals.orders + row.orders,
            revenue_fen=totals.revenue_fen + row.revenue_fen,
            refunded_fen=totals.refunded_fen + row.refunded_fen,
        )
    return totals

"""The counting rules: minutes of business time, each merchant's share of an order, signed amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.analytics.domain import (
    WINDOW,
    Contribution,
    RevenueView,
    Totals,
    add,
    merchants_of,
    minute_of,
    sale,
    snapshot,
    snapshot_id,
    summed,
    too_late,
)
from shared.contracts import MerchantRevenue
from tests.unit.analytics.factories import line
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)


def test_a_merchant_counts_one_order_and_only_its_own_lines() -> None:
    lines = [line("m-tea", 1999, quantity=2), line("m-cups", 500), line("m-tea", 1)]

    assert sale("m-tea", lines) == Contribution("m-tea", orders=1, amount_fen=2 * 1999 + 1)
    assert sale("m-cups", lines) == Contribution("m-cups", orders=1, amount_fen=500)


def test_an_order_without_a_line_of_the_merchant_cannot_count_for_it() -> None:
    with pytest.raises(ValueError, match="no line of merchant 'm-other'"):
        sale("m-other", [line("m-tea", 100)])


def test_each_merchant_on_an_order_is_named_once_in_first_seen_order() -> None:
    lines = [line("m-b", 1), line("m-a", 1), line("m-b", 1)]

    assert merchants_of(lines) == ["m-b", "m-a"]


def test_a_sale_adds_an_order_and_revenue_and_a_negative_amount_is_a_refund() -> None:
    after_sales = add(add(Totals(), Contribution("m", 1, 1999)), Contribution("m", 1, 1))
    after_refund = add(after_sales, Contribution("m", 0, -500))

    assert after_sales == Totals(orders=2, revenue_fen=2000, refunded_fen=0)
    assert after_refund == Totals(orders=2, revenue_fen=2000, refunded_fen=500)
    assert after_refund.net_fen == 1500


@pytest.mark.parametrize(
    ("at", "minute"),
    [
        (datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC), datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),
        (datetime(2026, 11, 25, 12, 0, 59, 999999, tzinfo=UTC), datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),
        (datetime(2026, 11, 25, 12, 1, 0, tzinfo=UTC), datetime(2026, 11, 25, 12, 1, tzinfo=UTC)),
        # +08:00 is the same instant in UTC: minutes are UTC whatever zone the time was written in.
        (
            datetime(2026, 11, 25, 20, 0, 30, tzinfo=timezone(timedelta(hours=8))),
            datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        ),
        # A time without a zone is taken as UTC.
        (datetime(2026, 11, 25, 12, 0, 30), datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),  # noqa: DTZ001
    ],
)
def test_a_time_falls_in_the_utc_minute_that_holds_it(at: datetime, minute: datetime) -> None:
    assert minute_of(at) == minute
    assert minute_of(at).utcoffset() == timedelta(0)


def test_a_fact_is_too_late_once_its_minute_ended_more_than_the_retention_ago() -> None:
    now = T0 + DAY + timedelta(minutes=1)  # T0's minute ended exactly one day before now's minute

    assert too_late(T0, now, DAY)
    assert too_late(T0 + timedelta(seconds=59), now, DAY)
    assert not too_late(T0 + WINDOW, now, DAY)
    assert not too_late(T0 + timedelta(hours=5), T0, DAY), "a clock ahead of ours is not late"


def test_a_snapshot_spans_its_minute_and_carries_the_totals() -> None:
    revenue = snapshot("m-tea", T0, Totals(orders=2, revenue_fen=2000, refunded_fen=5))

    assert revenue == MerchantRevenue(
        merchant_id="m-tea",
        window_start=T0,
        window_end=T0 + timedelta(minutes=1),
        orders=2,
        revenue_fen=2000,
        refunded_fen=5,
        currency="CNY",
    )
    assert revenue.subject() == "m-tea", "keyed by merchant: one merchant's minutes stay in order"


def test_the_same_totals_of_the_same_minute_have_the_same_id_and_any_change_another() -> None:
    base = snapshot("m-tea", T0, Totals(orders=1, revenue_fen=100))
    ids = {
        snapshot_id(base),
        snapshot_id(snapshot("m-tea", T0, Totals(orders=2, revenue_fen=100))),
        snapshot_id(snapshot("m-tea", T0, Totals(orders=1, revenue_fen=101))),
        snapshot_id(snapshot("m-tea", T0, Totals(orders=1, revenue_fen=100, refunded_fen=1))),
        snapshot_id(snapshot("m-cups", T0, Totals(orders=1, revenue_fen=100))),
        snapshot_id(snapshot("m-tea", T0 + WINDOW, Totals(orders=1, revenue_fen=100))),
    }

    assert snapshot_id(snapshot("m-tea", T0, Totals(orders=1, revenue_fen=100))) == snapshot_id(base)
    assert len(ids) == 6


def test_totals_round_trip_through_their_table_value() -> None:
    totals = Totals(orders=3, revenue_fen=5997, refunded_fen=10)

    assert Totals.from_json(totals.as_json()) == totals
    assert Totals.from_json(None) == Totals()


def row(merchant_id: str, minute: datetime, orders: int, revenue_fen: int) -> MerchantRevenue:
    return snapshot(merchant_id, minute, Totals(orders=orders, revenue_fen=revenue_fen))


def test_the_view_keeps_the_latest_published_totals_per_merchant_and_minute() -> None:
    view = RevenueView(retention=DAY)
    for published in (
        row("m-tea", T0, 1, 100),
        row("m-tea", T0 + WINDOW, 1, 50),
        row("m-tea", T0, 2, 300),
        row("m-cups", T0, 1, 7),
    ):
        view.apply(published, now=T0)

    assert view.merchant("m-tea", T0, T0 + 2 * WINDOW) == [
        row("m-tea", T0, 2, 300),
        row("m-tea", T0 + WINDOW, 1, 50),
    ]
    assert view.merchant("m-tea", T0 + WINDOW, T0 + 2 * WINDOW) == [row("m-tea", T0 + WINDOW, 1, 50)]
    assert view.merchant("m-tea", T0, T0 + WINDOW) == [row("m-tea", T0, 2, 300)], "the end is exclusive"
    assert view.merchant("m-nobody", T0, T0 + DAY) == []
    assert view.minute(T0 + timedelta(seconds=42)) == [row("m-cups", T0, 1, 7), row("m-tea", T0, 2, 300)]


def test_the_view_drops_minutes_older_than_its_retention() -> None:
    view = RevenueView(retention=DAY)
    view.apply(row("m-tea", T0, 1, 100), now=T0)
    view.apply(row("m-cups", T0 + DAY, 1, 7), now=T0 + DAY)
    view.apply(row("m-old", T0 - DAY, 1, 1), now=T0 + DAY)

    assert view.forget_before(T0 + DAY + WINDOW) == 1

    assert view.merchant("m-tea", T0 - DAY, T0 + 2 * DAY) == []
    assert view.merchant("m-cups", T0, T0 + 2 * DAY) == [row("m-cups", T0 + DAY, 1, 7)]
    assert view.merchant("m-old", T0 - 2 * DAY, T0 + 2 * DAY) == [], "too old to be kept at all"


def test_summed_adds_up_orders_revenue_and_refunds() -> None:
    rows = [row("m-tea", T0, 2, 300), row("m-tea", T0 + WINDOW, 1, 50)]

    assert summed(rows) == Totals(orders=3, revenue_fen=350)
    assert summed([]) == Totals()

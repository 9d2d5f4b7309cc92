"""Counting one fact into its merchant's minute, with plain dicts for the windowed tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from faust.windows import TumblingWindow

from services.analytics.domain import Contribution
from services.analytics.handlers import HANDLERS, Tally, count, merchants_to_count
from shared.contracts import Envelope, FraudDecision, FraudScored, MerchantRevenue, decode_data
from shared.kafka import Delivery, topic_for
from tests.unit.analytics.factories import confirmed, envelope_of, line
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

WINDOW = TumblingWindow(60, expires=86_400)
DAY = timedelta(days=1)


class Tables:
    def __init__(self) -> None:
        self.totals: dict[Any, Any] = {}
        self.counted: dict[Any, Any] = {}

    def tally(self, merchant_id: str, now: datetime = T0) -> Tally:
        return Tally(
            merchant_id=merchant_id,
            totals=self.totals,
            counted=self.counted,
            window_of=WINDOW.current,
            retention=DAY,
            now=now,
        )

    def count(self, merchant_id: str, cause: Envelope, now: datetime = T0) -> Tally:
        tally = self.tally(merchant_id, now)
        HANDLERS.dispatch(tally, [Delivery(cause, decode_data(cause), topic_for(cause), 0, 0)])
        return tally


def published(tally: Tally) -> list[MerchantRevenue]:
    return [MerchantRevenue.model_validate(envelope.data) for envelope in tally.outgoing]


def test_a_confirmed_order_adds_the_merchants_lines_to_the_minute_it_was_confirmed_in() -> None:
    tables = Tables()
    order = confirmed(line("m-tea", 1999, quantity=2), line("m-cups", 500))

    tally = tables.count("m-tea", envelope_of(order, at=T0 + timedelta(seconds=42)))

    [revenue] = published(tally)
    assert (revenue.merchant_id, revenue.window_start, revenue.window_end) == (
        "m-tea",
        T0,
        T0 + timedelta(minutes=1),
    )
    assert (revenue.orders, revenue.revenue_fen, revenue.refunded_fen) == (1, 3998, 0)
    assert tables.totals == {
        ("m-tea", WINDOW.current(T0.timestamp())): {"orders": 1, "revenue_fen": 3998, "refunded_fen": 0}
    }


def test_each_publish_carries_the_minutes_totals_so_far_and_a_new_minute_starts_from_zero() -> None:
    tables = Tables()
    first = tables.count("m-tea", envelope_of(confirmed(line("m-tea", 100)), at=T0))
    second = tables.count("m-tea", envelope_of(confirmed(line("m-tea", 250)), at=T0 + timedelta(seconds=59)))
    next_minute = tables.count(
        "m-tea", envelope_of(confirmed(line("m-tea", 7)), at=T0 + timedelta(seconds=60))
    )

    assert [(r.window_start, r.orders, r.revenue_fen) for r in published(first) + published(second)] == [
        (T0, 1, 100),
        (T0, 2, 350),
    ]
    assert [(r.window_start, r.orders, r.revenue_fen) for r in published(next_minute)] == [
        (T0 + timedelta(minutes=1), 1, 7)
    ]


def test_a_redelivered_fact_is_not_counted_twice_and_the_minute_is_published_again_unchanged() -> None:
    tables = Tables()
    cause = envelope_of(confirmed(line("m-tea", 100)), at=T0)

    first = tables.count("m-tea", cause)
    again = tables.count("m-tea", cause)

    assert not first.redelivered and again.redelivered
    assert published(again) == published(first)
    assert again.outgoing[0].id == first.outgoing[0].id, "the same minute's totals carry the same id"
    assert published(again)[0].orders == 1


def test_the_published_event_answers_its_cause() -> None:
    cause = envelope_of(confirmed(line("m-tea", 100)), at=T0, correlation_id="corr-42")

    [answer] = Tables().count("m-tea", cause).outgoing

    assert (answer.type, answer.source, answer.subject) == (
        "analytics.merchant_revenue",
        "analytics",
        "m-tea",
    )
    assert (answer.correlation_id, answer.causation_id) == ("corr-42", cause.id)


def test_a_fact_older_than_the_kept_minutes_is_neither_counted_nor_published() -> None:
    tables = Tables()

    tally = tables.count("m-tea", envelope_of(confirmed(line("m-tea", 100)), at=T0), now=T0 + 2 * DAY)

    assert tally.late and tally.outgoing == []
    assert tables.totals == {} and tables.counted == {}


def test_a_refund_counts_as_a_negative_amount_in_the_minute_it_happened() -> None:
    tables = Tables()
    tables.count("m-tea", envelope_of(confirmed(line("m-tea", 1000)), at=T0))
    refund = envelope_of(confirmed(line("m-tea", 1)), at=T0 + timedelta(seconds=5))
    tally = tables.tally("m-tea")

    count(tally, Contribution("m-tea", orders=0, amount_fen=-400), refund)

    [revenue] = published(tally)
    assert (revenue.orders, revenue.revenue_fen, revenue.refunded_fen) == (1, 1000, 400)


def test_an_order_is_routed_to_each_merchant_on_it_and_other_events_to_none() -> None:
    order = confirmed(line("m-b", 1), line("m-a", 1), line("m-b", 2))
    scored = FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)

    assert merchants_to_count(order) == ["m-b", "m-a"]
    assert merchants_to_count(scored) == []


def test_a_merchant_with_no_line_on_the_order_is_refused_and_nothing_changes() -> None:
    tables = Tables()

    with pytest.raises(ValueError, match="no line of merchant"):
        tables.count("m-other", envelope_of(confirmed(line("m-tea", 100)), at=T0))
    assert tables.totals == {} and tables.counted == {}

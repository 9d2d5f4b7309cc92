"""Merchant quality decided in memory: rates, limits, the judged window and counting each signal once."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import pytest

from services.inventory.domain import (
    QUALITY_RULES,
    Merchant,
    MerchantAction,
    MerchantQuality,
    OrderSignals,
    QualityBook,
    QualityChange,
    QualityCounts,
    QualityRules,
    last_automatic_suspension,
    percent,
)
from shared.contracts import MerchantStatus
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

RULES = QualityRules(
    min_orders=10,
    max_refund_rate=Fraction(3, 10),
    max_complaint_rate=Fraction(1, 5),
    min_rating=Fraction(3),
    min_reviews=5,
)


def approved(merchant_id: str = "m-1") -> Merchant:
    return Merchant(merchant_id, "West Lake Tea").created(MerchantAction.CREATE_APPROVED, "admin-1", T0)


def reinstated(at: timedelta) -> Merchant:
    suspended = approved().moved(MerchantAction.SUSPEND, "admin-1", T0 + at / 2, "counterfeit tea")
    return suspended.moved(MerchantAction.REINSTATE, "admin-1", T0 + at)


def book(
    *,
    orders: dict[str, OrderSignals] | None = None,
    qualities: dict[str, MerchantQuality] | None = None,
    merchants: dict[str, Merchant] | None = None,
    at: timedelta = timedelta(0),
) -> QualityBook:
    return QualityBook.open(orders or {}, qualities or {}, merchants or {"m-1": approved()}, T0 + at)


# --- rates and limits ----------------------------------------------------------------------------


def test_rates_are_exact_fractions_and_none_before_anything_is_counted() -> None:
    counts = QualityCounts(orders=3, refunded=1, complaints=2, rating_sum=14, reviews=4)

    assert (counts.refund_rate, counts.complaint_rate, counts.average_rating) == (
        Fraction(1, 3),
        Fraction(2, 3),
        Fraction(7, 2),
    )
    assert QualityCounts().refund_rate is None
    assert QualityCounts().average_rating is None
    assert percent(Fraction(2, 5)) == "40%"
    assert percent(Fraction(1, 8)) == "12.5%"


def test_a_refund_rate_above_the_limit_is_named_with_its_numbers() -> None:
    assert RULES.crossed(QualityCounts(orders=20, refunded=8)) == [
        "refund rate 40% over 20 orders exceeds the 30% limit"
    ]


def test_exactly_at_a_limit_is_within_it() -> None:
    at_the_limits = QualityCounts(orders=10, refunded=3, complaints=2, rating_sum=15, reviews=5)

    assert RULES.crossed(at_the_limits) == []


def test_every_limit_crossed_is_named() -> None:
    counts = QualityCounts(orders=10, refunded=4, complaints=3, rating_sum=12, reviews=5)

    assert RULES.crossed(counts) == [
        "refund rate 40% over 10 orders exceeds the 30% limit",
        "complaint rate 30% over 10 orders exceeds the 20% limit",
        "average rating 2.4 over 5 reviews is below the minimum of 3",
    ]


def test_rates_wait_for_enough_orders_and_the_rating_for_enough_reviews() -> None:
    early = QualityCounts(orders=9, refunded=9, complaints=9, rating_sum=4, reviews=4)

    assert RULES.crossed(early) == []
    assert len(RULES.over_limits(early)) == 3, "at risk all the same"
    assert RULES.crossed(QualityCounts(orders=2, rating_sum=5, reviews=5)) == [
        "average rating 1 over 5 reviews is below the minimum of 3"
    ], "the rating has its own minimum, whatever the number of orders"


# --- counting each signal once -------------------------------------------------------------------


def test_a_confirmed_order_counts_once_for_each_of_its_merchants() -> None:
    merchants = {"m-1": approved(), "m-2": approved("m-2")}
    quality = book(merchants=merchants)

    quality.confirmed("o-1", ["m-1", "m-2", "m-1"])
    quality.confirmed("o-1", ["m-1", "m-2"])

    assert quality.after("m-1").total == QualityCounts(orders=1)
    assert quality.after("m-2").judged == QualityCounts(orders=1)
    assert [o.merchants for o in quality.changed_orders()] == [("m-1", "m-2")]


def test_an_order_refunded_twice_counts_one_refund_and_an_unknown_order_none() -> None:
    quality = book()
    quality.confirmed("o-1", ["m-1"])

    quality.refund_requested("o-1")
    quality.refund_requested("o-1")
    quality.refund_requested("o-never-confirmed")

    assert quality.after("m-1").total == QualityCounts(orders=1, refunded=1)


def test_complaints_count_once_per_case_and_ratings_once_per_order_and_merchant() -> None:
    quality = book()
    quality.confirmed("o-1", ["m-1"])

    quality.after_sales_requested("o-1", "case-1", "m-1")
    quality.after_sales_requested("o-1", "case-1", "m-1")
    quality.after_sales_requested("o-1", "case-2", "m-1")
    quality.after_sales_requested("o-1", "case-3", "m-9")
    quality.reviewed("o-1", "m-1", 2)
    quality.reviewed("o-1", "m-1", 5)

    assert quality.after("m-1").total == QualityCounts(orders=1, complaints=2, rating_sum=2, reviews=1)


def test_signals_of_orders_stored_by_an_earlier_batch_count_and_are_written_back() -> None:
    earlier = OrderSignals("o-1", ("m-1",), T0, refunded=True)
    stored = MerchantQuality("m-1", QualityCounts(orders=1, refunded=1), QualityCounts(orders=1, refunded=1))
    quality = book(orders={"o-1": earlier}, qualities={"m-1": stored})

    quality.refund_requested("o-1")
    quality.after_sales_requested("o-1", "case-1", "m-1")

    assert quality.changes() == [
        QualityChange("m-1", QualityCounts(complaints=1), QualityCounts(complaints=1))
    ]
    assert quality.changed_orders() == [OrderSignals("o-1", ("m-1",), T0, True, frozenset({"case-1"}))]


# --- suspension and reinstatement ----------------------------------------------------------------


def test_an_approved_merchant_crossing_a_limit_is_suspended_by_the_rules_with_the_reason() -> None:
    stored = MerchantQuality(
        "m-1", QualityCounts(orders=10, refunded=3), QualityCounts(orders=10, refunded=3)
    )
    orders = {"o-9": OrderSignals("o-9", ("m-1",), T0)}
    quality = book(orders=orders, qualities={"m-1": stored}, at=timedelta(hours=1))

    quality.refund_requested("o-9")
    [suspension] = quality.suspensions(RULES)

    merchant = suspension.suspended
    assert merchant.status is MerchantStatus.SUSPENDED
    assert merchant.reason == "refund rate 40% over 10 orders exceeds the 30% limit"
    assert (merchant.history[-1].by, merchant.history[-1].at) == (QUALITY_RULES, T0 + timedelta(hours=1))
    assert last_automatic_suspension(merchant) == merchant.history[-1]


def test_within_the_limits_or_not_approved_or_rules_off_nobody_is_suspended() -> None:
    stored = MerchantQuality(
        "m-1", QualityCounts(orders=10, refunded=3), QualityCounts(orders=10, refunded=3)
    )
    orders = {"o-9": OrderSignals("o-9", ("m-1",), T0)}
    suspended = approved().moved(MerchantAction.SUSPEND, "admin-1", T0, "counterfeit tea")

    within = book(qualities={"m-1": stored})
    within.confirmed("o-10", ["m-1"])
    already = book(orders=orders, qualities={"m-1": stored}, merchants={"m-1": suspended})
    already.refund_requested("o-9")
    off = book(orders=orders, qualities={"m-1": stored})
    off.refund_requested("o-9")

    assert within.suspensions(RULES) == []
    assert already.suspensions(RULES) == []
    assert off.suspensions(QualityRules(min_orders=10, auto_suspend=False)) == []
    assert last_automatic_suspension(suspended) is None, "an admin's suspension is not the rules'"


def test_a_reinstated_merchant_is_judged_afresh_on_orders_confirmed_since() -> None:
    """The numbers that led to the suspension do not suspend it again at the next signal: the
    judged window restarts at the reinstatement, and an old order's refund stays in the totals."""
    bad = QualityCounts(orders=10, refunded=5)
    stored = MerchantQuality("m-1", bad, bad)
    old_order = OrderSignals("o-old", ("m-1",), T0)
    merchant = reinstated(timedelta(hours=2))
    quality = book(
        orders={"o-old": old_order},
        qualities={"m-1": stored},
        merchants={"m-1": merchant},
        at=timedelta(hours=3),
    )

    quality.refund_requested("o-old")
    quality.confirmed("o-new", ["m-1"])
    quality.refund_requested("o-new")

    after = quality.after("m-1")
    assert after.total == QualityCounts(orders=11, refunded=7)
    assert after.judged == QualityCounts(orders=1, refunded=1)
    assert after.judged_since == T0 + timedelta(hours=2)
    assert quality.suspensions(RULES) == [], "one order is too few to judge"
    assert quality.changes() == [
        QualityChange(
            "m-1",
            QualityCounts(orders=1, refunded=2),
            QualityCounts(orders=1, refunded=1),
            T0 + timedelta(hours=2),
        )
    ]


def test_the_judged_window_restarts_once_per_reinstatement() -> None:
    merchant = reinstated(timedelta(hours=2))
    restarted = MerchantQuality(
        "m-1", QualityCounts(orders=12), QualityCounts(orders=2), T0 + timedelta(hours=2)
    )

    assert restarted.as_of(merchant) is restarted
    assert MerchantQuality("m-1", QualityCounts(orders=12), QualityCounts(orders=12)).as_of(merchant) == (
        MerchantQuality("m-1", QualityCounts(orders=12), QualityCounts(), T0 + timedelta(hours=2))
    )
    assert MerchantQuality("m-1").as_of(approved()) == MerchantQuality("m-1"), "never reinstated: all orders"

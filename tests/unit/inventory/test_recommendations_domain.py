"""Co-purchases and recommendation ranking, decided in memory."""

from __future__ import annotations

import pytest

from services.inventory.domain import (
    CO_PURCHASES_KEPT,
    Listing,
    Recommendation,
    RecommendationList,
    RecommendationSource,
    SkuSales,
    co_purchase_scores,
    record_sales,
)

pytestmark = pytest.mark.unit

BOUGHT_TOGETHER = RecommendationSource.BOUGHT_TOGETHER
BEST_SELLER = RecommendationSource.BEST_SELLER


def listing(sku: str, *, merchant_id: str = "m-1", active: bool = True, available: int = 5) -> Listing:
    return Listing(sku, sku, merchant_id, 1000, "CNY", "tea", active, available)


def test_each_order_counts_once_per_sku_and_pairs_with_every_other_sku() -> None:
    sales = record_sales({}, [["A", "B", "A"], ["A", "C"], ["A", "B"]])

    assert sales["A"] == SkuSales("A", 3, (("B", 2), ("C", 1)))
    assert sales["B"] == SkuSales("B", 2, (("A", 2),))
    assert sales["C"] == SkuSales("C", 1, (("A", 1),))


def test_sales_add_to_what_was_stored() -> None:
    known = {"A": SkuSales("A", 5, (("C", 1), ("B", 1)))}

    assert record_sales(known, [["A", "C"]])["A"] == SkuSales("A", 6, (("C", 2), ("B", 1)))


def test_a_full_co_purchase_list_keeps_what_is_bought_together_often_and_lets_newcomers_into_the_tail() -> (
    None
):
    often = [(f"OFTEN-{i:03}", 2) for i in range(CO_PURCHASES_KEPT - 1)]
    full = SkuSales("A", 100, (*often, ("ONCE", 1)))

    replaced = full.sold_with(["A", "NEW-1"])
    kept = replaced.sold_with(["A", "NEW-2"])

    assert len(replaced.bought_with) == len(kept.bought_with) == CO_PURCHASES_KEPT
    assert ("NEW-1", 1) in replaced.bought_with and ("ONCE", 1) not in replaced.bought_with
    assert ("NEW-2", 1) in kept.bought_with and ("NEW-1", 1) not in kept.bought_with
    crowded = SkuSales("A", 100, tuple((f"OFTEN-{i:03}", 2) for i in range(CO_PURCHASES_KEPT)))
    assert crowded.sold_with(["NEW"]).bought_with == crowded.bought_with, "a one-off does not evict a pair"


def test_co_purchase_scores_add_up_over_what_the_customer_bought_and_leave_it_out() -> None:
    sales = {
        "A": SkuSales("A", 9, (("B", 4), ("C", 2), ("D", 1))),
        "B": SkuSales("B", 7, (("A", 4), ("C", 3))),
    }

    assert co_purchase_scores({"A": 1, "B": 2}, sales) == [("C", 5), ("D", 1)]
    assert co_purchase_scores({}, sales) == []


def test_a_list_fills_from_its_sources_in_turn_once_each_and_only_with_what_can_be_bought() -> None:
    listings = {sku: listing(sku) for sku in ["B", "C", "D", "E", "F"]} | {
        "OUT": listing("OUT", available=0),
        "OFF": listing("OFF", active=False),
        "BANNED": listing("BANNED", merchant_id="m-suspended"),
    }
    picks = RecommendationList(4, listings, {"m-1"}, exclude={"A"})

    picks.add(
        [("OUT", 9), ("B", 5), ("OFF", 4), ("BANNED", 3), ("A", 3), ("GHOST", 2), ("C", 1)], BOUGHT_TOGETHER
    )
    picks.add([("C", 40), ("D", 30), ("E", 20), ("F", 10)], BEST_SELLER)

    assert picks.picked == [
        Recommendation("B", BOUGHT_TOGETHER, 5),
        Recommendation("C", BOUGHT_TOGETHER, 1),
        Recommendation("D", BEST_SELLER, 30),
        Recommendation("E", BEST_SELLER, 20),
    ]
    assert picks.full

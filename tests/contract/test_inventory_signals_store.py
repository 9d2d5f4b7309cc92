"""The inventory store's merchant quality and co-purchase records, held against the twin and MongoDB alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr

from services.inventory.domain import (
    CO_PURCHASES_KEPT,
    Listing,
    Merchant,
    MerchantAction,
    MerchantQuality,
    OrderSignals,
    Product,
    QualityChange,
    QualityCounts,
    SkuSales,
)
from services.inventory.store import PURCHASES, InventoryStore, MongoInventoryStore, Purchase
from shared.contracts import MerchantStatus
from shared.crypto import PersonalData
from shared.mongo import MongoStore
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.samples import T0

CONSUMER = "inventory"
PERSONAL = PersonalData(SecretStr("t1:dGVzdC1vbmx5LWludmVudG9yeS1zdG9yZS1rZXktMDE"))


async def put_products(store: InventoryStore, *products: Product) -> None:
    async with store.transaction(CONSUMER) as tx:
        for product in products:
            await tx.put_product(product)


async def sell(store: InventoryStore, sales: list[SkuSales], purchases: list[Purchase]) -> None:
    async with store.transaction(CONSUMER) as tx:
        await tx.save_sales(sales, purchases)


class SignalsStoreContract:
    """Subclasses provide the fixture `store`, an empty InventoryStore."""

    # --- merchant quality --------------------------------------------------------------------------

    async def test_order_signals_are_written_whole_and_read_back_by_order(
        self, store: InventoryStore
    ) -> None:
        first = OrderSignals("o-1", ("m-1", "m-2"), T0)
        changed = OrderSignals(
            "o-1", ("m-1", "m-2"), T0, True, frozenset({"case-1", "case-2"}), frozenset({"m-2"})
        )

        async with store.transaction(CONSUMER) as tx:
            await tx.save_quality([first, OrderSignals("o-2", ("m-1",), T0)], [])
        async with store.transaction(CONSUMER) as tx:
            await tx.save_quality([changed], [])
            found = await tx.order_signals({"o-1", "o-404"})

        assert found == {"o-1": changed}

    async def test_quality_changes_add_up_and_a_restart_replaces_the_judged_counts(
        self, store: InventoryStore
    ) -> None:
        once = QualityChange("m-1", QualityCounts(orders=2, refunded=1), QualityCounts(orders=2, refunded=1))
        restart = T0 + timedelta(hours=1)

        async with store.transaction(CONSUMER) as tx:
            await tx.save_quality(
                [], [once, QualityChange("m-2", QualityCounts(orders=1), QualityCounts(orders=1))]
            )
        async with store.transaction(CONSUMER) as tx:
            await tx.save_quality([], [once])
        added = await store.merchant_quality("m-1")
        async with store.transaction(CONSUMER) as tx:
            await tx.save_quality(
                [],
                [
                    QualityChange(
                        "m-1", QualityCounts(reviews=1, rating_sum=5), QualityCounts(orders=1), restart
                    )
                ],
            )
            in_transaction = await tx.merchant_qualities({"m-1", "m-404"})

        assert added == MerchantQuality(
            "m-1", QualityCounts(orders=4, refunded=2), QualityCounts(orders=4, refunded=2)
        )
        restarted = MerchantQuality(
            "m-1",
            QualityCounts(orders=4, refunded=2, rating_sum=5, reviews=1),
            QualityCounts(orders=1),
            restart,
        )
        assert in_transaction == {"m-1": restarted}
        assert await store.merchant_quality("m-1") == restarted
        assert await store.merchant_quality("m-404") is None
        assert [q.merchant_id for q in await store.merchant_qualities_all()] == ["m-1", "m-2"]

    async def test_a_failed_transaction_counts_nothing(self, store: InventoryStore) -> None:
        with pytest.raises(RuntimeError):
            async with store.transaction(CONSUMER) as tx:
                await tx.save_quality(
                    [OrderSignals("o-1", ("m-1",), T0)],
                    [QualityChange("m-1", QualityCounts(orders=1), QualityCounts())],
                )
                await tx.save_sales([SkuSales("TEA", 1)], [Purchase("c-1", "TEA")])
                raise RuntimeError("the batch failed after its writes")

        assert await store.merchant_quality("m-1") is None
        assert await store.sales(["TEA"]) == {}
        assert await store.purchases("c-1") == {}
        async with store.transaction(CONSUMER) as tx:
            assert await tx.order_signals(["o-1"]) == {}

    # --- co-purchases ------------------------------------------------------------------------------

    async def test_sales_are_written_whole_with_their_list_in_order(self, store: InventoryStore) -> None:
        full = tuple((f"SKU-{i:03}", CO_PURCHASES_KEPT - i) for i in range(CO_PURCHASES_KEPT))

        await sell(store, [SkuSales("TEA", 3, (("CUP", 2), ("POT", 1))), SkuSales("CUP", 2)], [])
        await sell(store, [SkuSales("TEA", 200, full)], [])
        async with store.transaction(CONSUMER) as tx:
            in_transaction = await tx.sku_sales({"TEA", "GHOST"})

        assert in_transaction == {"TEA": SkuSales("TEA", 200, full)}
        assert await store.sales(["CUP", "TEA"]) == {
            "CUP": SkuSales("CUP", 2),
            "TEA": SkuSales("TEA", 200, full),
        }

    async def test_purchases_count_orders_per_customer_and_sku_most_bought_first(
        self, store: InventoryStore
    ) -> None:
        await sell(store, [], [Purchase("c-1", "TEA"), Purchase("c-1", "CUP"), Purchase("c-2", "TEA")])
        await sell(store, [], [Purchase("c-1", "CUP"), Purchase("c-1", "CUP")])

        assert list((await store.purchases("c-1")).items()) == [("CUP", 3), ("TEA", 1)]
        assert await store.purchases("c-2") == {"TEA": 1}
        assert await store.purchases("c-404") == {}

    async def test_best_sellers_by_orders_then_sku_within_a_limit(self, store: InventoryStore) -> None:
        await sell(
            store, [SkuSales("TEA", 5), SkuSales("CUP", 9), SkuSales("BOWL", 5), SkuSales("POT", 1)], []
        )

        assert await store.best_sellers(3) == [("CUP", 9), ("BOWL", 5), ("TEA", 5)]
        assert await store.best_sellers(3, categories={"nothing-here"}) == []

    async def test_listings_and_approved_merchants_tell_what_can_be_bought(
        self, store: InventoryStore
    ) -> None:
        await put_products(
            store,
            Product("TEA", "Longjing", "m-1", 8800, available=3),
            Product("CUP", "Cup", "m-2", 1200, available=0, active=False),
        )
        async with store.transaction(CONSUMER) as tx:
            await tx.put_merchant(Merchant("m-1", "Tea").created(MerchantAction.CREATE_APPROVED, "admin", T0))
            await tx.put_merchant(Merchant("m-2", "Cups").created(MerchantAction.REGISTER, "m-2", T0))
            suspended = Merchant("m-3", "Pots").created(MerchantAction.CREATE_APPROVED, "admin", T0)
            await tx.put_merchant(suspended.moved(MerchantAction.SUSPEND, "admin", T0, "fakes"))

        assert await store.listings({"TEA", "CUP", "GHOST"}) == {
            "TEA": Listing("TEA", "Longjing", "m-1", 8800, "CNY", "", True, 3),
            "CUP": Listing("CUP", "Cup", "m-2", 1200, "CNY", "", False, 0),
        }
        assert await store.approved_merchants({"m-1", "m-2", "m-3", "m-404"}) == {"m-1"}
        stored = await store.get_merchant("m-3")
        assert stored is not None and stored.status is MerchantStatus.SUSPENDED


class TestInMemorySignalsStore(SignalsStoreContract):
    @pytest.fixture
    def store(self) -> InventoryStore:
        return InMemoryInventoryStore()


class TestMongoSignalsStore(SignalsStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> InventoryStore:
        store = MongoInventoryStore(mongo_store, PERSONAL)
        await store.ensure_indexes()
        return store

    async def test_purchases_are_kept_under_a_blind_index_of_the_customer(
        self, store: InventoryStore, mongo_store: MongoStore
    ) -> None:
        await sell(store, [], [Purchase("buyer@example.com", "TEA")])

        raw = await mongo_store.db[PURCHASES].find().to_list()
        assert raw and "buyer@example.com" not in str(raw)
        assert await store.purchases("buyer@example.com") == {"TEA": 1}

    async def test_best_sellers_of_categories_are_the_active_products_in_stock_of_them(
        self, store: InventoryStore, mongo_store: MongoStore
    ) -> None:
        await put_products(
            store,
            Product("TEA", "Longjing", "m-1", 8800, available=3),
            Product("OOLONG", "Oolong", "m-1", 8800, available=0),
            Product("CUP", "Cup", "m-1", 1200, available=4),
        )
        # Categories come with the catalog's product descriptions; written raw until then.
        for sku, category in [("TEA", "tea"), ("OOLONG", "tea"), ("CUP", "teaware")]:
            await mongo_store.db["products"].update_one({"_id": sku}, {"$set": {"category": category}})
        await sell(store, [SkuSales("TEA", 2), SkuSales("OOLONG", 9), SkuSales("CUP", 5)], [])

        assert await store.best_sellers(10, categories={"tea"}) == [("TEA", 2)]
        assert (await store.listings({"CUP"}))["CUP"].category == "teaware"

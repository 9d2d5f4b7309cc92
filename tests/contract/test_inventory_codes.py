"""What the inventory handlers rely on from the code pools of virtual products, held against the
in-memory twin and MongoDB alike."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from pydantic import SecretStr

from services.inventory.store import CODES, CodeConflict, InventoryStore, MongoInventoryStore
from shared.crypto import PersonalData
from shared.errors import retry_transient
from shared.mongo import MongoStore
from tests.twins.inventory import InMemoryInventoryStore

CONSUMER = "inventory"
PERSONAL = PersonalData(SecretStr("t1:dGVzdC1vbmx5LWludmVudG9yeS1zdG9yZS1rZXktMDE"))


async def add(store: InventoryStore, sku: str, *codes: str) -> None:
    async with store.transaction(CONSUMER) as tx:
        await tx.add_codes(sku, list(codes))


async def pooled(store: InventoryStore, sku: str, *codes: str) -> set[str]:
    async with store.transaction(CONSUMER) as tx:
        return await tx.pooled_codes(sku, codes)


async def assign(store: InventoryStore, sku: str, order_id: str, quantity: int) -> list[str]:
    async with store.transaction(CONSUMER) as tx:
        sealed = await tx.assign_codes(sku, order_id, quantity)
    return [PERSONAL.open(code) for code in sealed]


class CodePoolContract:
    """Subclasses provide the fixture `store`: an empty InventoryStore sealing with PERSONAL."""

    async def test_a_pool_finds_its_own_codes_only(self, store: InventoryStore) -> None:
        await add(store, "GIFT", "G-1", "G-2")
        await add(store, "GIFT-200", "H-1")

        assert await pooled(store, "GIFT", "G-2", "G-3", "H-1") == {"G-2"}
        assert await pooled(store, "GIFT-200", "G-1", "H-1") == {"H-1"}
        assert await pooled(store, "TEA", "G-1") == set()

    async def test_a_code_pooled_already_is_refused_and_the_transaction_keeps_nothing(
        self, store: InventoryStore
    ) -> None:
        await add(store, "GIFT", "G-1")

        with pytest.raises(CodeConflict):
            await add(store, "GIFT", "G-2", "G-1")

        assert await pooled(store, "GIFT", "G-1", "G-2") == {"G-1"}
        await add(store, "GIFT-200", "G-1")  # another product's pool may hold the same code

    async def test_codes_are_assigned_in_the_order_added_each_to_one_order(
        self, store: InventoryStore
    ) -> None:
        await add(store, "GIFT", "G-1", "G-2", "G-3")
        await add(store, "GIFT", "G-4")

        assert await assign(store, "GIFT", "o-1", 2) == ["G-1", "G-2"]
        assert await assign(store, "GIFT", "o-2", 1) == ["G-3"]
        assert await assign(store, "GIFT-200", "o-3", 1) == [], "another product's pool is not touched"
        assert await assign(store, "GIFT", "o-4", 3) == ["G-4"], "a short pool gives what it has"
        assert await assign(store, "GIFT", "o-5", 1) == []

    async def test_assigning_again_gives_the_same_codes_and_takes_no_more(
        self, store: InventoryStore
    ) -> None:
        await add(store, "GIFT", "G-1", "G-2", "G-3")
        first = await assign(store, "GIFT", "o-1", 2)

        again = await assign(store, "GIFT", "o-1", 2)

        assert again == first == ["G-1", "G-2"]
        assert await assign(store, "GIFT", "o-2", 5) == ["G-3"]

    async def test_orders_assigned_at_once_never_share_a_code(self, store: InventoryStore) -> None:
        codes = [f"G-{n}" for n in range(8)]
        await add(store, "GIFT", *codes)
        orders = [f"o-{n}" for n in range(10)]

        # Each in its own transaction, retried on a conflict as the consumer loop would.
        given = await asyncio.gather(
            *(
                retry_transient(partial(assign, store, "GIFT", order, 1), attempts=20, backoff_s=0.005)
                for order in orders
            )
        )

        handed_out = [code for got in given for code in got]
        assert sorted(handed_out) == sorted(codes), "every code once, none twice"


class TestInMemoryCodePool(CodePoolContract):
    @pytest.fixture
    def store(self) -> InventoryStore:
        return InMemoryInventoryStore(PERSONAL)


class TestMongoCodePool(CodePoolContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> InventoryStore:
        store = MongoInventoryStore(mongo_store, PERSONAL)
        await store.ensure_indexes()
        return store

    async def test_codes_are_sealed_at_rest(self, store: InventoryStore, mongo_store: MongoStore) -> None:
        await add(store, "GIFT", "GIFT-CODE-SECRET-1")
        await assign(store, "GIFT", "o-1", 1)

        [raw] = await mongo_store.db[CODES].find().to_list()
        assert "GIFT-CODE-SECRET-1" not in str(raw)
        assert PERSONAL.open(raw["sealed_code"]) == "GIFT-CODE-SECRET-1"
        assert (raw["status"], raw["order_id"]) == ("assigned", "o-1")

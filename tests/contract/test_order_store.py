"""The order store's contract, run against the in-memory twin and MongoDB, so the twin cannot drift."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from services.order.domain import CatalogItem, Deadlines, Order, OrderStatus
from services.order.store import (
    IDEMPOTENCY,
    ORDERS,
    ConcurrentUpdate,
    IdempotencyConflict,
    IdempotencyKey,
    MongoOrderStore,
    NewOrder,
    OrderNumberTaken,
    OrderStore,
    order_to_doc,
)
from shared.contracts import (
    Envelope,
    FraudDecision,
    OrderLine,
    OrderPlaced,
    PaymentMethod,
    ProductKind,
    StockReserved,
)
from shared.errors import ConcurrentWrite
from shared.kafka import decode, new_envelope
from shared.mongo import OUTBOX, MongoStore
from tests.twins.order import InMemoryOrderStore
from tests.unit.samples import ADDRESS, T0, delivery

ReadOutbox = Callable[[], Awaitable[list[Envelope]]]
DEADLINES = Deadlines()
LEASE = timedelta(seconds=30)
CHECKS_DUE = T0 + DEADLINES.checks
_numbers = itertools.count(1)


def placed(order_id: str, *, customer_id: str = "c-1", after: timedelta = timedelta(0)) -> Order:
    """A PENDING order placed `after` T0 (its checks deadline follows), numbered uniquely."""
    now = T0 + after
    order, _ = Order.place(
        order_id=order_id,
        order_no=f"20261125-{next(_numbers):06d}",
        customer_id=customer_id,
        lines=[OrderLine(sku="TEA", name="Longjing", merchant_id="m-1", quantity=1, unit_price_fen=8800)],
        shipping_address=ADDRESS,
        payment_method=PaymentMethod.ALIPAY,
        payment_token="tok",
        now=now,
        deadlines=DEADLINES,
        correlation_id=f"corr-{order_id}",
    )
    return order


def envelope_for(order: Order) -> Envelope:
    event = OrderPlaced(
        order_id=order.order_id,
        order_no=order.order_no,
        customer_id=order.customer_id,
        lines=order.lines,
        total_fen=order.total_fen,
        payment_method=order.payment_method,
        shipping_address=order.shipping_address,
        placed_at=order.placed_at,
    )
    return new_envelope(event, source="order", correlation_id=order.correlation_id)


def product(sku: str, price_fen: int = 1000, *, active: bool = True) -> CatalogItem:
    return CatalogItem(sku, f"name of {sku}", "m-1", ProductKind.PHYSICAL, price_fen, active)


async def insert(store: OrderStore, *orders: Order) -> None:
    async with store.transaction("order") as tx:
        for order in orders:
            await tx.insert_new([NewOrder(order)])


async def save(store: OrderStore, *orders: Order) -> None:
    async with store.transaction("order") as tx:
        await tx.save_changed(orders)


class Boom(Exception):
    pass


class OrderStoreContract:
    """Subclasses provide the fixtures `store` (an empty OrderStore) and `read_outbox`."""

    async def test_an_inserted_order_reads_back_as_it_was_at_version_1(self, store: OrderStore) -> None:
        order = placed("o-1")
        await insert(store, order)
        assert order.version == 1
        assert await store.get("o-1") == order
        assert await store.get("o-2") is None
        assert await store.get_many(["o-1", "o-2", "o-1"]) == {"o-1": order}

    async def test_a_second_order_with_a_used_number_is_refused(self, store: OrderStore) -> None:
        first = placed("o-1")
        await insert(store, first)
        second = placed("o-2")
        second.order_no = first.order_no
        with pytest.raises(OrderNumberTaken):
            await insert(store, second)
        assert await store.get("o-2") is None
        assert await store.get("o-1") == first

    async def test_a_used_idempotency_key_names_the_first_order_and_its_fingerprint(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(placed("o-1"), IdempotencyKey("c-1:key", "fingerprint-1"))])
        with pytest.raises(IdempotencyConflict) as conflict:
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(placed("o-2"), IdempotencyKey("c-1:key", "fingerprint-2"))])
        assert (conflict.value.order_id, conflict.value.fingerprint) == ("o-1", "fingerprint-1")
        assert await store.get("o-2") is None

    async def test_orders_inserted_together_are_stored_together_or_not_at_all(
        self, store: OrderStore
    ) -> None:
        first, second = placed("o-1"), placed("o-2")
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(first), NewOrder(second, IdempotencyKey("c-2:key", "f-2"))])
        assert await store.get_many(["o-1", "o-2"]) == {"o-1": first, "o-2": second}

        fresh, reused_number, reused_key = placed("o-3"), placed("o-4"), placed("o-5")
        reused_number.order_no = first.order_no
        with pytest.raises(OrderNumberTaken) as taken:
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(fresh), NewOrder(reused_number)])
        assert taken.value.args == (first.order_no,), "the error names the order that failed"
        with pytest.raises(IdempotencyConflict) as conflict:
            async with store.transaction("order") as tx:
                await tx.insert_new(
                    [
                        NewOrder(fresh, IdempotencyKey("c-3:key", "f-3")),
                        NewOrder(reused_key, IdempotencyKey("c-2:key", "f-5")),
                    ]
                )
        assert conflict.value.order_id == "o-2"
        assert await store.get_many(["o-3", "o-4", "o-5"]) == {}, "nothing of a failed batch is stored"

    async def test_a_save_bumps_the_version_and_a_save_from_a_stale_read_is_refused(
        self, store: OrderStore
    ) -> None:
        await insert(store, placed("o-1"))
        first, stale = await store.get("o-1"), await store.get("o-1")
        assert first is not None and stale is not None
        first.stock_reserved(T0, DEADLINES)
        await save(store, first)
        assert first.version == 2
        stale.fraud_scored(T0, FraudDecision.APPROVE, 1, [], DEADLINES)
        with pytest.raises(ConcurrentUpdate):
            await save(store, stale)
        assert await store.get("o-1") == first

    async def test_one_stale_order_in_a_save_keeps_the_others_unchanged(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"), placed("o-2"))
        fresh, stale, concurrent = await store.get("o-1"), await store.get("o-2"), await store.get("o-2")
        assert fresh is not None and stale is not None and concurrent is not None
        await save(store, concurrent)
        fresh.stock_reserved(T0, DEADLINES)
        with pytest.raises(ConcurrentWrite):
            await save(store, fresh, stale)
        stored = await store.get("o-1")
        assert stored is not None and (stored.version, stored.status) == (1, OrderStatus.PENDING)
        assert len(stored.timeline) == 1

    async def test_an_error_inside_a_transaction_stores_nothing(
        self, store: OrderStore, read_outbox: ReadOutbox
    ) -> None:
        await insert(store, placed("o-1"))
        changed = await store.get("o-1")
        assert changed is not None
        changed.stock_reserved(T0, DEADLINES)
        new = placed("o-2")
        cause = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        with pytest.raises(Boom):
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(new, IdempotencyKey("c-1:key", "fingerprint"))])
                await tx.save_changed([changed])
                await tx.upsert_catalog([product("TEA")])
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_for(new)])
                raise Boom
        assert await store.get("o-2") is None
        stored = await store.get("o-1")
        assert stored is not None and (stored.version, stored.status) == (1, OrderStatus.PENDING)
        assert await store.catalog_items(["TEA"]) == {}
        assert await store.unapplied("order", [cause]) == [cause]
        assert await read_outbox() == []
        async with store.transaction("order") as tx:  # the key was not taken either
            await tx.insert_new([NewOrder(placed("o-3"), IdempotencyKey("c-1:key", "fingerprint"))])

    async def test_an_event_is_applied_once_per_consumer(self, store: OrderStore) -> None:
        first = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        other = delivery(StockReserved(order_id="o-2", lines=[], expires_at=T0))
        assert await store.unapplied("order", [first, first, other]) == [first, other]
        async with store.transaction("order") as tx:
            tx.mark_applied([first.envelope.id])
        assert await store.unapplied("order", [first, other]) == [other]
        assert await store.unapplied("audit", [first]) == [first]

    async def test_a_second_apply_of_an_event_is_refused_with_all_its_writes(self, store: OrderStore) -> None:
        event = delivery(StockReserved(order_id="o-1", lines=[], expires_at=T0))
        async with store.transaction("order") as tx:
            tx.mark_applied([event.envelope.id])
        with pytest.raises(ConcurrentWrite):
            async with store.transaction("order") as tx:
                await tx.insert_new([NewOrder(placed("o-1"))])
                tx.mark_applied([event.envelope.id])
        assert await store.get("o-1") is None

    async def test_emitted_events_land_in_the_outbox_in_order(
        self, store: OrderStore, read_outbox: ReadOutbox
    ) -> None:
        orders = [placed("o-1"), placed("o-2")]
        envelopes = [envelope_for(order) for order in orders]
        async with store.transaction("order") as tx:
            tx.emit(envelopes[:1])
            tx.emit(envelopes[1:])
        assert [env.id for env in await read_outbox()] == [env.id for env in envelopes]

    async def test_a_customers_orders_come_newest_first_up_to_the_limit(self, store: OrderStore) -> None:
        oldest, middle, newest = (placed(f"o-{i}", after=timedelta(minutes=i)) for i in range(3))
        await insert(store, middle, newest, oldest, placed("o-other", customer_id="c-2"))
        assert [o.order_id for o in await store.for_customer("c-1", 2)] == ["o-2", "o-1"]
        assert [o.order_id for o in await store.for_customer("c-1", 10)] == ["o-2", "o-1", "o-0"]
        assert await store.for_customer("c-3", 10) == []

    async def test_only_waiting_orders_past_their_deadline_are_claimed_earliest_first(
        self, store: OrderStore
    ) -> None:
        late = placed("o-late", after=timedelta(seconds=10))
        early = placed("o-early")
        not_due = placed("o-not-due", after=timedelta(minutes=5))
        ended = placed("o-ended")
        await insert(store, late, early, not_due, ended)
        ended.stock_rejected(T0, "none left")
        await save(store, ended)
        now = T0 + timedelta(minutes=1)
        assert [o.order_id for o in await store.claim_overdue(now, 1, "a", LEASE)] == ["o-early"]
        claimed = await store.claim_overdue(now, 10, "a", LEASE)
        assert [o.order_id for o in claimed] == ["o-early", "o-late"]
        assert claimed[0] == early
        assert await store.claim_overdue(CHECKS_DUE - timedelta(milliseconds=1), 10, "b", LEASE) == []

    async def test_two_owners_never_share_a_claim_while_it_lasts(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"), placed("o-2"), placed("o-3"))
        now = CHECKS_DUE
        by_a = {o.order_id for o in await store.claim_overdue(now, 2, "a", LEASE)}
        by_b = {o.order_id for o in await store.claim_overdue(now, 10, "b", LEASE)}
        assert len(by_a) == 2 and len(by_b) == 1 and not by_a & by_b
        later = now + LEASE - timedelta(seconds=1)
        assert await store.claim_overdue(later, 10, "c", LEASE) == []
        assert {o.order_id for o in await store.claim_overdue(later, 10, "a", LEASE)} == by_a

    async def test_a_claim_expires_after_its_lease(self, store: OrderStore) -> None:
        await insert(store, placed("o-1"))
        assert len(await store.claim_overdue(CHECKS_DUE, 10, "a", LEASE)) == 1
        assert await store.claim_overdue(CHECKS_DUE + timedelta(seconds=29), 10, "b", LEASE) == []
        taken_over = await store.claim_overdue(CHECKS_DUE + LEASE, 10, "b", LEASE)
        assert [o.order_id for o in taken_over] == ["o-1"]
        assert await store.claim_overdue(CHECKS_DUE + LEASE, 10, "a", LEASE) == []

    async def test_the_catalog_replica_keeps_the_latest_upsert_and_pages_active_products_by_sku(
        self, store: OrderStore
    ) -> None:
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([product("TEA", 100), product("CUP"), product("OLD", active=False)])
        async with store.transaction("order") as tx:
            await tx.upsert_catalog([product("TEA", 8800), product("BOWL")])
        found = await store.catalog_items(["TEA", "OLD", "NOPE"])
        assert found == {"TEA": product("TEA", 8800), "OLD": product("OLD", active=False)}
        assert [i.sku for i in await store.catalog_page(10)] == ["BOWL", "CUP", "TEA"]
        assert [i.sku for i in await store.catalog_page(2)] == ["BOWL", "CUP"]

    async def test_the_latest_order_number_is_the_days_highest(self, store: OrderStore) -> None:
        numbers = ["20261125-000002", "20261125-000010", "20261126-000001", "20261124-000099"]
        orders = [placed(f"o-{i}") for i in range(len(numbers))]
        for order, number in zip(orders, numbers, strict=True):
            order.order_no = number
        await insert(store, *orders)
        assert await store.latest_order_no("20261125") == "20261125-000010"
        assert await store.latest_order_no("20261127") is None


class TestInMemoryOrderStore(OrderStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryOrderStore:
        return InMemoryOrderStore()

    @pytest.fixture
    def read_outbox(self, store: InMemoryOrderStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            return list(store.outbox)

        return read


class TestMongoOrderStore(OrderStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> MongoOrderStore:
        store = MongoOrderStore(mongo_store)
        await store.ensure_indexes(idempotency_key_ttl_s=3600)
        return store

    @pytest.fixture
    def read_outbox(self, mongo_store: MongoStore) -> ReadOutbox:
        async def read() -> list[Envelope]:
            docs = await mongo_store.db[OUTBOX].find().sort("_id", 1).to_list()
            return [decode(doc["value"]) for doc in docs]

        return read

    async def test_idempotency_keys_expire_through_a_ttl_index(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        indexes = [index async for index in await mongo_store.db[IDEMPOTENCY].list_indexes()]
        ttl = [i for i in indexes if dict(i["key"]) == {"created_at": 1}]
        assert [i.get("expireAfterSeconds") for i in ttl] == [3600]

    async def test_an_idempotency_key_records_when_it_was_used(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        order = placed("o-1")
        async with store.transaction("order") as tx:
            await tx.insert_new([NewOrder(order, IdempotencyKey("c-1:key", "fingerprint"))])
        doc = await mongo_store.db[IDEMPOTENCY].find_one({"_id": "c-1:key"})
        assert doc is not None and doc["created_at"] == order.placed_at

    async def test_an_order_update_maintains_no_index_but_its_deadline(
        self, store: MongoOrderStore, mongo_store: MongoStore
    ) -> None:
        # Every secondary index on orders is rewritten at each of the saga's updates; lookups that
        # never change live in insert-only collections instead.
        indexes = [dict(index["key"]) async for index in await mongo_store.db[ORDERS].list_indexes()]
        assert indexes == [{"_id": 1}, {"deadline_at": 1}]

    async def test_orders_stored_before_the_lookups_existed_get_them_and_lose_the_old_indexes(
        self, mongo_store: MongoStore
    ) -> None:
        older, newer = placed("o-1"), placed("o-2", after=timedelta(minutes=1))
        orders = mongo_store.db[ORDERS]
        await orders.create_index([("order_no", 1)], unique=True)
        await orders.create_index([("customer_id", 1), ("placed_at", -1)])
        await orders.insert_many([order_to_doc(older), order_to_doc(newer)])

        store = MongoOrderStore(mongo_store)
        await store.ensure_indexes(idempotency_key_ttl_s=3600)

        assert [o.order_id for o in await store.for_customer(older.customer_id, 10)] == ["o-2", "o-1"]
        assert await store.latest_order_no(older.order_no.split("-")[0]) == max(
            older.order_no, newer.order_no
        )
        reused = placed("o-3")
        reused.order_no = older.order_no
        with pytest.raises(OrderNumberTaken):
            await insert(store, reused)
        indexes = [dict(index["key"]) async for index in await orders.list_indexes()]
        assert indexes == [{"_id": 1}, {"deadline_at": 1}]

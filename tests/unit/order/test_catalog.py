"""The catalog replica: replayed whole from inventory's tables at every start, ready only once it holds
what the tables held, kept in step afterwards, and never stopped by a bad record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from services.order.catalog import TABLES, NotACatalogEvent, apply_catalog, catalog_replica
from services.order.handlers import OrderService
from shared.contracts import (
    Event,
    FraudDecision,
    FraudScored,
    MerchantUpserted,
    PaymentMethod,
    ProductUpserted,
    topics,
)
from shared.errors import DependencyLost
from shared.kafka import encode, headers_for, new_envelope
from shared.settings import SharedSettings
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.order.factories import order_service
from tests.unit.samples import delivery

pytestmark = pytest.mark.unit

SETTINGS = SharedSettings(handler_max_attempts=2, consumer_max_records=2, dependency_outage_limit_s=60)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class FakeTables:
    """A broker's view of the tables, as a group-less aiokafka consumer sees it: one partition each.

    `reported_end` plays a broker that answers "latest" short of the real end (the embedded one
    answers with the start of the last batch); `listed_after` makes the metadata list the tables only
    from that call on."""

    logs: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    reported_end: dict[TopicPartition, int] = field(default_factory=dict)
    listed_after: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    highwaters: dict[TopicPartition, int] = field(default_factory=dict)
    metadata_calls: int = 0
    stopped: bool = False
    # Called after every fetch, so a test can look at the replica between batches.
    on_fetch: Any = None

    def publish(self, topic: str, value: bytes | None, key: bytes = b"k") -> None:
        log = self.logs.setdefault(TopicPartition(topic, 0), [])
        log.append(Record(topic, 0, len(log), key, value, []))

    def event(self, event: Event) -> None:
        envelope = new_envelope(event, source="inventory", correlation_id="c")
        log = self.logs.setdefault(TopicPartition(event.TOPIC, 0), [])
        log.append(
            Record(
                event.TOPIC, 0, len(log), envelope.subject.encode(), encode(envelope), headers_for(envelope)
            )
        )

    async def start(self) -> None:
        for table in TABLES:
            self.logs.setdefault(TopicPartition(table, 0), [])

    async def topics(self) -> set[str]:
        self.metadata_calls += 1
        return {tp.topic for tp in self.logs} if self.metadata_calls > self.listed_after else set()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self.logs if tp.topic == topic} or None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.reported_end.get(tp, len(self.logs[tp])) for tp in partitions}

    async def getmany(self, *_: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        await asyncio.sleep(0)  # a fetch waits on the broker: the test's tasks run meanwhile
        polled: dict[TopicPartition, list[Record]] = {}
        budget = max_records or 500
        for tp, position in self.positions.items():
            self.highwaters[tp] = len(self.logs[tp])
            taken = self.logs[tp][position : position + budget]
            budget -= len(taken)
            if taken:
                polled[tp] = taken
                self.positions[tp] = position + len(taken)
        if self.on_fetch is not None:
            self.on_fetch()
        return polled

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, list[tuple[str, bytes | None]]]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> None:
        self.sent.append((topic, value, list(headers)))


@pytest.fixture
def store() -> InMemoryOrderStore:
    return InMemoryOrderStore()


@pytest.fixture
def service(store: InMemoryOrderStore) -> OrderService:
    return order_service(store, InMemoryOrderNumbers())


def product(sku: str, price_fen: int = 1000, **changes: Any) -> ProductUpserted:
    return ProductUpserted(sku=sku, name=f"Product {sku}", merchant_id="m-1", price_fen=price_fen, **changes)


def merchant(merchant_id: str, *methods: PaymentMethod) -> MerchantUpserted:
    return MerchantUpserted(
        merchant_id=merchant_id, name="Tea house", payment_methods=list(methods or PaymentMethod)
    )


async def replay_until_ready(
    service: OrderService,
    tables: FakeTables,
    producer: FakeProducer | None = None,
    settings: SharedSettings = SETTINGS,
) -> FakeProducer:
    """Run the replica until it reports ready, then stop it and leave the replica as it was the moment
    it became ready (what a client would have seen then)."""
    producer = producer or FakeProducer()
    replica = catalog_replica(settings, service, tables, producer)
    store = service.store
    assert isinstance(store, InMemoryOrderStore)
    stop = asyncio.Event()
    worker = asyncio.ensure_future(replica.worker(stop))
    try:
        async with asyncio.timeout(10):
            await replica.replay.caught_up.wait()
        at_ready = dict(store.catalog), dict(store.merchants)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
    assert await replica.ready() and tables.stopped
    store.catalog, store.merchants = at_ready
    return producer


def prices(store: InMemoryOrderStore) -> dict[str, int]:
    return {sku: item.price_fen for sku, item in store.catalog.items()}


async def test_a_replay_writes_every_product_and_merchant_the_latest_record_of_each_winning(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    for event in [
        product("TEA", 100),
        product("CUP", 200),
        product("TEA", 300),
        product("POT", 400, active=False),
    ]:
        tables.event(event)
    tables.event(merchant("m-1", PaymentMethod.ALIPAY))
    tables.event(merchant("m-1", PaymentMethod.BANK_CARD))

    await replay_until_ready(service, tables)

    assert prices(store) == {"TEA": 300, "CUP": 200, "POT": 400}
    assert not store.catalog["POT"].active
    assert store.merchants["m-1"].payment_methods == {PaymentMethod.BANK_CARD}
    assert store.ledger.processed == set(), (
        "a replay records nothing as applied: the next one reads it all again"
    )


async def test_the_replica_reports_ready_only_once_it_holds_everything_the_tables_held_at_start(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    skus = [f"SKU-{n}" for n in range(7)]
    for sku in skus:
        tables.event(product(sku))
    replica = catalog_replica(SETTINGS, service, tables, FakeProducer())
    seen: list[tuple[bool, int]] = []
    tables.on_fetch = lambda: seen.append((replica.replay.caught_up.is_set(), len(store.catalog)))
    stop = asyncio.Event()
    worker = asyncio.ensure_future(replica.worker(stop))
    async with asyncio.timeout(10):
        await replica.replay.caught_up.wait()
    stop.set()
    await asyncio.wait_for(worker, 10)

    assert sorted(store.catalog) == skus
    # Two records per batch: three fetches leave part of the table unwritten, and none of them is ready.
    assert [ready for ready, _ in seen[:4]] == [False] * 4
    assert all(written == len(skus) for ready, written in seen if ready)


async def test_a_broker_answering_short_of_the_end_does_not_make_the_replica_ready_early(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    for sku in ("A", "B", "C", "D", "E"):
        tables.event(product(sku))
    # As the embedded broker does: "latest" is the start of the last batch, here offset 1.
    tables.reported_end[TopicPartition(topics.INVENTORY_PRODUCTS, 0)] = 1

    await replay_until_ready(service, tables)

    assert sorted(store.catalog) == ["A", "B", "C", "D", "E"]


async def test_empty_tables_are_ready_at_once(service: OrderService, store: InMemoryOrderStore) -> None:
    await replay_until_ready(service, FakeTables())
    assert store.catalog == {} and store.merchants == {}


async def test_an_emptied_replica_is_rebuilt_whole_by_the_next_start(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    for sku in ("TEA", "CUP", "POT"):
        tables.event(product(sku))
    tables.event(merchant("m-1", PaymentMethod.ALIPAY))
    await replay_until_ready(service, tables)
    store.catalog.clear()
    store.merchants.clear()

    await replay_until_ready(service, tables)

    assert sorted(store.catalog) == ["CUP", "POT", "TEA"] and list(store.merchants) == ["m-1"]


async def test_after_the_replay_the_replica_follows_new_records(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    tables.event(product("TEA", 100))
    replica = catalog_replica(SETTINGS, service, tables, FakeProducer())
    followed = asyncio.Event()
    # The fetch after the write sees the replica as the write left it.

    def note_followed() -> None:
        if prices(store) == {"TEA": 150, "NEW": 900}:
            followed.set()

    tables.on_fetch = note_followed
    stop = asyncio.Event()
    worker = asyncio.ensure_future(replica.worker(stop))
    async with asyncio.timeout(10):
        await replica.replay.caught_up.wait()
        tables.event(product("TEA", 150))
        tables.event(product("NEW", 900))
        await followed.wait()
    stop.set()
    await asyncio.wait_for(worker, 10)


async def test_bad_records_on_the_tables_are_dead_lettered_and_the_replay_still_completes(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables()
    tables.event(product("TEA"))
    tables.publish(topics.INVENTORY_PRODUCTS, b"not an envelope")
    tables.event(FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1))  # on fraud.events
    stranger = new_envelope(
        FraudScored(order_id="o-2", decision=FraudDecision.APPROVE, score=1), source="x", correlation_id="c"
    )
    tables.publish(topics.INVENTORY_MERCHANTS, encode(stranger))
    tables.event(product("CUP"))
    tables.event(merchant("m-1"))

    producer = await replay_until_ready(service, tables)

    assert sorted(store.catalog) == ["CUP", "TEA"] and list(store.merchants) == ["m-1"]
    dead = sorted(
        (topic, (dict(headers)["dlq_error"] or b"").decode()) for topic, _, headers in producer.sent
    )
    assert [topic for topic, _ in dead] == ["inventory.merchants.dlq", "inventory.products.dlq"]
    assert "NotACatalogEvent" in dead[0][1] and "undecodable" in dead[1][1]


async def test_the_replay_waits_for_tables_the_broker_does_not_list_yet(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    tables = FakeTables(listed_after=1)
    tables.event(product("TEA"))
    await replay_until_ready(service, tables)
    assert list(store.catalog) == ["TEA"] and tables.metadata_calls == 2


async def test_tables_missing_past_the_outage_limit_stop_the_process(service: OrderService) -> None:
    replica = catalog_replica(
        SharedSettings(dependency_outage_limit_s=0.01), service, FakeTables(listed_after=10), FakeProducer()
    )
    with pytest.raises(DependencyLost, match="inventory.merchants, inventory.products"):
        await asyncio.wait_for(replica.worker(asyncio.Event()), 10)


async def test_a_batch_holding_an_event_of_another_kind_is_refused_whole(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    deliveries: Sequence[Any] = [
        delivery(product("TEA")),
        delivery(FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)),
    ]
    with pytest.raises(NotACatalogEvent, match="fraud.scored"):
        await apply_catalog(service, deliveries)
    assert store.catalog == {}

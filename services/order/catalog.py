"""The gateway's catalog replica, rebuilt from inventory's tables at every start and kept in step.

`inventory.products`, `inventory.merchants` and `inventory.coupons` are tables: topics keyed by SKU,
merchant id and coupon code on which the latest record of each key is its current state. At every
start the order service reads them from their beginning with a consumer of its own, outside any
consumer group (every partition assigned by hand, nothing committed: where to start is always "the
whole table"), writes what it reads into its catalog, merchant and coupon replicas a batch at a time,
with the same handlers that applied these events before they had topics of their own, and then keeps
following the tables.
A fresh database, or one whose catalog was dropped, converges to the full catalog with nobody doing
anything.

The gateway reports not ready (`/readyz`, check `catalog`) until the replay has reached the ends the
tables had when it started, so a fresh gateway never answers "unknown product" for a product that
exists.

Where the tables are whole:
- On real Kafka they are compacted topics (deploy/k8s/base/topics.yaml): compaction keeps the latest
  record of every key for good, so the replay reads each product and merchant at least once, its
  latest state last.
- The embedded broker neither compacts nor outlives a restart. While it runs it keeps every record,
  so the replay reads the whole history (the later record of a key wins); and inventory republishes
  its whole catalog whenever it starts (services/inventory/announce.py), which refills the tables
  after the broker lost them.

Records are read through the shared BatchConsumer, so a record that is not a catalog event is
dead-lettered to `<topic>.dlq` with why, and never stops the replica. Nothing is recorded as applied:
applying a product's state twice changes nothing, and an emptied replica must take every record again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.order.handlers import (
    SERVICE,
    Batch,
    OrderService,
    on_coupon_upserted,
    on_merchant_upserted,
    on_product_upserted,
)
from shared.contracts import CouponUpserted, MerchantUpserted, ProductUpserted, topics
from shared.errors import Outage, is_transient
from shared.handlers import Handlers
from shared.kafka import BatchConsumer, Delivery, make_plain_consumer
from shared.logging import get_logger
from shared.runtime import Worker
from shared.settings import SharedSettings

log = get_logger(__name__)

# The replica's name as a consumer: its client id, its metrics label and its dead letters' consumer.
REPLICA = "order-catalog"
TABLES = (topics.INVENTORY_PRODUCTS, topics.INVENTORY_MERCHANTS, topics.INVENTORY_COUPONS)
# How often the replay asks the broker again for tables it does not list yet.
METADATA_RETRY_S = 0.5

CATALOG_HANDLERS = (
    Handlers[Batch]()
    .on(ProductUpserted, on_product_upserted)
    .on(MerchantUpserted, on_merchant_upserted)
    .on(CouponUpserted, on_coupon_upserted)
)


class NotACatalogEvent(ValueError):
    """A record on a catalog table that is not a ProductUpserted, MerchantUpserted or CouponUpserted."""


async def apply_catalog(service: OrderService, deliveries: Sequence[Delivery]) -> None:
    """Write a batch of the tables' records into the catalog, merchant and coupon replicas in one write; of
    several records of one key, the later one wins. Raises NotACatalogEvent for a batch holding any
    other event, so that the consumer applies the batch one event at a time and dead-letters that one."""
    strangers = [delivery for delivery in deliveries if not CATALOG_HANDLERS.handles(delivery)]
    if strangers:
        stranger = strangers[0]
        raise NotACatalogEvent(f"{stranger.envelope.type} does not belong on the table {stranger.topic}")
    batch = Batch(source=SERVICE, orders={}, now=service.clock(), deadlines=service.deadlines)
    CATALOG_HANDLERS.dispatch(batch, deliveries)
    async with service.store.transaction(SERVICE) as tx:
        await tx.upsert_catalog(list(batch.catalog.values()))
        await tx.upsert_merchants(list(batch.merchants.values()))
        await tx.upsert_coupons(list(batch.coupons.values()))


class TableReplay:
    """The consumer the BatchConsumer reads the tables through: every partition of `tables` from its
    beginning, then whatever comes. `caught_up` is set once the replica holds everything the tables
    held when the replay started.

    A partition's end is the larger of what the broker answered for its end at start and the first
    high-water mark a fetch reported for it: some brokers answer "latest" with the start of a
    partition's last batch (the embedded one does), and the first fetch's mark, taken just after the
    start, is exact. The end is fixed then, so records inventory keeps publishing do not hold the
    gateway's readiness back.
    """

    def __init__(self, consumer: AIOKafkaConsumer, tables: Sequence[str], *, outage: Outage) -> None:
        self._consumer = consumer
        self._tables = tables
        self._outage = outage
        self._ends: dict[TopicPartition, int] = {}
        # Where each partition's replay ends, once a fetch has confirmed it.
        self._targets: dict[TopicPartition, int] = {}
        self._behind: set[TopicPartition] = set()
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        partitions = await self._partitions()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._ends = dict(await self._consumer.end_offsets(partitions))
        self._behind = set(partitions)
        log.info("catalog_replay_started", partitions=len(partitions), up_to=sum(self._ends.values()))

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Any:
        polled = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        if not any(polled.values()):
            await self._note_progress()  # nothing fetched: nothing waits to be written either
        return polled

    async def commit(self) -> None:
        """The BatchConsumer calls this once a batch is written. A replay keeps no offsets (the next
        start reads the tables whole again), so this is where it notes how far the replica has got."""
        await self._note_progress()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _note_progress(self) -> None:
        if self.caught_up.is_set():
            return
        for partition in list(self._behind):
            target = self._targets.get(partition)
            if target is None:
                highwater: int | None = self._consumer.highwater(partition)
                if highwater is None:
                    continue  # no fetch has answered for it yet
                target = self._targets[partition] = max(self._ends[partition], highwater)
            if await self._consumer.position(partition) >= target:
                self._behind.discard(partition)
        if not self._behind:
            self.caught_up.set()
            log.info("catalog_replay_caught_up", up_to=sum(self._targets.values()))

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the tables, once the broker's metadata lists them all (the services
        create missing topics as they start; on a cluster they are declared). Gives up
        (DependencyLost) when they stay missing past the outage limit."""
        while True:
            known: set[str] = await self._consumer.topics()
            found = {
                table: self._consumer.partitions_for_topic(table) if table in known else None
                for table in self._tables
            }
            missing = sorted(table for table, numbers in found.items() if not numbers)
            if not missing:
                return [
                    TopicPartition(table, number)
                    for table, numbers in found.items()
                    for number in sorted(numbers or ())
                ]
            self._outage.failed(LookupError(f"the broker lists no partitions of {', '.join(missing)}"))
            await asyncio.sleep(METADATA_RETRY_S)


@dataclass(frozen=True)
class CatalogReplica:
    """The worker that replays and follows the tables, and the readiness check that waits for it."""

    replay: TableReplay
    worker: Worker

    async def ready(self) -> bool:
        return self.replay.caught_up.is_set()


def catalog_replica(
    settings: SharedSettings, service: OrderService, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer
) -> CatalogReplica:
    """The replica of inventory's tables for `service`, read through `consumer` (a table_consumer) and
    dead-lettering through `producer`."""
    replay = TableReplay(
        consumer, TABLES, outage=Outage("the catalog tables' metadata", settings.dependency_outage_limit_s)
    )
    batches = BatchConsumer(
        service=REPLICA,
        consumer=replay,
        producer=producer,
        handle=partial(apply_catalog, service),
        settings=settings,
        is_transient=is_transient,
    )
    return CatalogReplica(replay, batches.run)


def table_consumer(settings: SharedSettings) -> AIOKafkaConsumer:
    """A consumer outside any group: partitions are assigned by hand and nothing is committed."""
    # A position compaction has since cleaned away reads on from the table's new beginning.
    return make_plain_consumer(settings, REPLICA, auto_offset_reset="earliest")

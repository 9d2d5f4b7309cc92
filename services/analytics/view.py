"""Follows analytics.merchant-revenue into the RevenueView that the API answers from.

Every replica reads every partition from the beginning, with no consumer group and no commits: the
tally agent's tables hold only the merchants of this replica's partitions, the published topic holds
them all. It is also how a data team's job reads the topic: keep the latest record per (merchant,
minute).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

from services.analytics.domain import RevenueView
from shared.clock import Clock, utc_now
from shared.contracts import MerchantRevenue
from shared.kafka import PoisonRecord, decode_record
from shared.logging import get_logger

log = get_logger(__name__)

VIEW_SKIPPED = Counter(
    "analytics_view_skipped_total", "Records on the revenue topic the API view could not read"
)
# How often minutes older than the retention are dropped from the view.
FORGET_INTERVAL_S = 60.0


class Follower:
    """Reads a topic into a RevenueView; `caught_up` is set once it has read what was there at start."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        view: RevenueView,
        *,
        poll_timeout_ms: int,
        max_records: int,
        clock: Clock = utc_now,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._view = view
        self._poll_timeout_ms = poll_timeout_ms
        self._max_records = max_records
        self._clock = clock
        self.caught_up = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            partitions = await self._partitions(stop)
            if not partitions:
                return
            self._consumer.assign(partitions)
            await self._consumer.seek_to_beginning(*partitions)
            ends: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
            loop = asyncio.get_running_loop()
            forgotten_at = loop.time()
            while not stop.is_set():
                polled = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                self.apply([record for batch in polled.values() for record in batch])
                if not self.caught_up.is_set() and await self._reached(ends):
                    self.caught_up.set()
                    log.info("revenue_view_caught_up", topic=self._topic)
                if loop.time() - forgotten_at >= FORGET_INTERVAL_S:
                    self._view.forget_before(self._clock())
                    forgotten_at = loop.time()
        finally:
            await self._consumer.stop()

    def apply(self, records: Sequence[Any]) -> None:
        """Each record's totals into the view; a record that is not a MerchantRevenue is counted and
        logged. It stays on the topic (nothing is committed): there is no offset to hold it back by."""
        now = self._clock()
        for record in records:
            try:
                event = decode_record(record).event
            except PoisonRecord as poison:
                self._skip(record, str(poison))
                continue
            if not isinstance(event, MerchantRevenue):
                self._skip(record, f"{event.TYPE} is not a {MerchantRevenue.TYPE}")
                continue
            self._view.apply(event, now)

    def _skip(self, record: Any, why: str) -> None:
        VIEW_SKIPPED.inc()
        log.error("revenue_view_skipped", topic=record.topic, offset=record.offset, error=why[:500])

    async def _partitions(self, stop: asyncio.Event) -> list[TopicPartition]:
        """The topic's partitions once the broker's metadata lists them (ensure_topics made it); none
        if asked to stop first."""
        while not stop.is_set():
            await self._consumer.topics()
            found = self._consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, partition) for partition in sorted(found)]
            await asyncio.sleep(0.5)
        return []

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for partition, end in ends.items():
            if await self._consumer.position(partition) < end:
                return False
        return True

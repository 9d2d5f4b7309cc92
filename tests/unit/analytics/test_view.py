"""The follower that reads analytics.merchant-revenue back into the API's view, on a stand-in consumer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from services.analytics.domain import WINDOW, RevenueView, Totals, snapshot
from services.analytics.view import Follower
from shared.contracts import FraudDecision, FraudScored
from shared.kafka import encode, new_envelope
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

TOPIC = "analytics.merchant-revenue"


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def published(merchant_id: str, orders: int, revenue_fen: int, offset: int, minute: Any = T0) -> Record:
    revenue = snapshot(merchant_id, minute, Totals(orders=orders, revenue_fen=revenue_fen))
    envelope = new_envelope(revenue, source="analytics", correlation_id="c")
    return Record(TOPIC, 0, offset, merchant_id.encode(), encode(envelope))


@dataclass
class StandInConsumer:
    """Serves `batches` one getmany at a time from a topic of one partition, then nothing."""

    end: int
    batches: list[list[Record]]
    started: bool = False
    stopped: bool = False
    assigned: list[TopicPartition] = field(default_factory=list)
    position_: int = 0
    served: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def topics(self) -> set[str]:
        return {TOPIC}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic == TOPIC else None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.position_ = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, self.end)

    async def position(self, partition: TopicPartition) -> int:
        return self.position_

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if not self.batches:
            self.served.set()
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = self.batches.pop(0)
        self.position_ = batch[-1].offset + 1
        return {TopicPartition(TOPIC, 0): batch}


def follower_of(consumer: StandInConsumer, view: RevenueView) -> Follower:
    return Follower(
        consumer,
        TOPIC,
        view,
        poll_timeout_ms=1,
        max_records=10,
        clock=lambda: T0 + timedelta(seconds=30),
    )


async def test_the_follower_reads_every_partition_from_the_start_and_is_caught_up_at_the_starting_end() -> (
    None
):
    view = RevenueView(retention=timedelta(days=1))
    consumer = StandInConsumer(
        end=3,
        batches=[
            [published("m-tea", 1, 100, 0), published("m-cups", 1, 5, 1)],
            [published("m-tea", 2, 300, 2)],
            [published("m-tea", 3, 301, 3)],
        ],
    )
    follower = follower_of(consumer, view)
    stop = asyncio.Event()

    running = asyncio.ensure_future(follower.run(stop))
    await asyncio.wait_for(consumer.served.wait(), 5)
    caught_up = follower.caught_up.is_set()
    stop.set()
    await asyncio.wait_for(running, 5)

    assert caught_up
    assert consumer.assigned == [TopicPartition(TOPIC, 0)] and consumer.stopped
    [tea] = view.merchant("m-tea", T0, T0 + WINDOW)
    assert (tea.orders, tea.revenue_fen) == (3, 301), "the latest record wins"
    assert [row.merchant_id for row in view.minute(T0)] == ["m-cups", "m-tea"]


async def test_the_follower_is_not_caught_up_before_it_reached_the_starting_end() -> None:
    consumer = StandInConsumer(end=5, batches=[[published("m-tea", 1, 100, 0)]])
    follower = follower_of(consumer, RevenueView(retention=timedelta(days=1)))
    stop = asyncio.Event()

    running = asyncio.ensure_future(follower.run(stop))
    await asyncio.wait_for(consumer.served.wait(), 5)
    caught_up = follower.caught_up.is_set()
    stop.set()
    await asyncio.wait_for(running, 5)

    assert not caught_up


def skipped() -> float:
    return REGISTRY.get_sample_value("analytics_view_skipped_total") or 0.0


async def test_a_record_that_is_no_revenue_is_skipped_counted_and_the_rest_applied() -> None:
    view = RevenueView(retention=timedelta(days=1))
    follower = follower_of(StandInConsumer(end=0, batches=[]), view)
    other = new_envelope(
        FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1),
        source="fraud",
        correlation_id="c",
    )
    before = skipped()

    follower.apply(
        [
            Record(TOPIC, 0, 0, b"k", b"\x00 not an event"),
            Record(TOPIC, 0, 1, b"k", encode(other)),
            published("m-tea", 1, 100, 2),
        ]
    )

    assert skipped() == before + 2
    assert [row.revenue_fen for row in view.merchant("m-tea", T0, T0 + WINDOW)] == [100]

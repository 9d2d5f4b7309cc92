"""How `shopctl events` reads a topic, against an in-memory stand-in for aiokafka's consumer: where a
window read starts and ends, what tail shows and when it stops. The real broker is exercised by
tests/integration/test_events_cli.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import UnsupportedVersionError

from shopctl import streams
from shopctl.events import Record as Consumed
from shopctl.events import Selection, Window
from tests.unit.shopctl.records import NOW, Record, record_of, rejected

pytestmark = pytest.mark.unit

MS = 1000


class Found(NamedTuple):
    offset: int
    timestamp: int


class Topics:
    """A broker's partitions in memory, and consumers that read them the way aiokafka's does."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[Record]] = {}
        self.time_lookup_supported = True
        # The embedded broker answers "latest" with the start of a partition's last batch.
        self.latest_lags_by = 0
        # Called after each fetch: lets a test publish while a read is under way.
        self.after_fetch: list[Any] = []

    def create(self, topic: str, partitions: int) -> None:
        for number in range(partitions):
            self.logs[TopicPartition(topic, number)] = []

    def publish(self, record: Record) -> Record:
        log = self.logs[TopicPartition(record.topic, record.partition)]
        placed = replace(record, offset=len(log))
        log.append(placed)
        return placed

    def consumer(self, **options: Any) -> FakeConsumer:
        assert options["group_id"] is None, "the tools never join a consumer group"
        assert options["enable_auto_commit"] is False
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, broker: Topics) -> None:
        self._broker = broker
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._highwater: dict[TopicPartition, int] = {}
        self.fetches = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def topics(self) -> set[str]:
        return {tp.topic for tp in self._broker.logs}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self._broker.logs if tp.topic == topic} or None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._positions = dict.fromkeys(partitions, 0)

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: max(0, len(self._broker.logs[tp]) - self._broker.latest_lags_by) for tp in partitions}

    async def offsets_for_times(
        self, wanted: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Found | None]:
        if not self._broker.time_lookup_supported:
            raise UnsupportedVersionError("ListOffsets by time")
        found: dict[TopicPartition, Found | None] = {}
        for tp, timestamp in wanted.items():
            later = [r for r in self._broker.logs[tp] if r.timestamp >= timestamp]
            found[tp] = Found(later[0].offset, later[0].timestamp) if later else None
        return found

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._positions[tp] = 0

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._positions[tp] = len(self._broker.logs[tp])

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        """As a fetch response last reported it; unknown until the partition was fetched."""
        return self._highwater.get(tp)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[Record]]:
        self.fetches += 1
        fetched: dict[TopicPartition, list[Record]] = {}
        for tp in partitions or tuple(self._positions):
            if tp in self._paused:
                continue
            self._highwater[tp] = len(self._broker.logs[tp])
            batch = self._broker.logs[tp][self._positions[tp] : self._positions[tp] + 2]
            if batch:
                fetched[tp] = batch
                self._positions[tp] += len(batch)
        for hook in self._broker.after_fetch:
            hook()
        return fetched


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Topics:
    topics = Topics()
    topics.create("order.events", 3)
    monkeypatch.setattr(streams, "AIOKafkaConsumer", topics.consumer)
    return topics


def event_at(moment: datetime, order_id: str, *, partition: int, produced: datetime | None = None) -> Record:
    """An order event stamped `moment`, published at `produced` (by default the same instant)."""
    stamp = int((produced or moment).timestamp() * MS)
    return record_of(rejected(order_id, at=moment), partition=partition, timestamp=stamp)


async def window_of(
    broker: Topics, window: Window, *topics: str, consumer: FakeConsumer | None = None
) -> list[Consumed]:
    reader = consumer or broker.consumer(group_id=None, enable_auto_commit=False)
    return [seen.record async for seen in streams.window_records(reader, topics, window)]


# --- window reads ------------------------------------------------------------------------------------


async def test_a_window_read_returns_the_events_stamped_inside_it_from_every_partition(
    broker: Topics,
) -> None:
    window = Window(NOW, NOW + timedelta(minutes=1))
    inside = [
        broker.publish(event_at(NOW, "ord-1", partition=0)),
        broker.publish(event_at(NOW + timedelta(seconds=30), "ord-2", partition=1)),
        broker.publish(event_at(NOW + timedelta(seconds=59), "ord-3", partition=2)),
    ]
    broker.publish(event_at(NOW - timedelta(seconds=1), "ord-4", partition=0))
    broker.publish(event_at(NOW + timedelta(minutes=1), "ord-5", partition=1))

    assert sorted(await window_of(broker, window, "order.events"), key=lambda r: r.partition) == inside


async def test_an_event_published_long_after_its_time_is_still_in_its_window(broker: Topics) -> None:
    window = Window(NOW, NOW + timedelta(minutes=1))
    late = broker.publish(
        event_at(NOW + timedelta(seconds=10), "ord-1", partition=0, produced=NOW + timedelta(hours=2))
    )

    assert await window_of(broker, window, "order.events") == [late]


async def test_an_event_published_a_little_before_its_time_by_a_slow_clock_is_found(broker: Topics) -> None:
    window = Window(NOW, NOW + timedelta(minutes=1))
    for minute in range(30, 0, -1):
        broker.publish(event_at(NOW - timedelta(minutes=minute), "ord-old", partition=0))
    skewed = broker.publish(
        event_at(NOW + timedelta(seconds=1), "ord-1", partition=0, produced=NOW - timedelta(minutes=2))
    )

    assert await window_of(broker, window, "order.events") == [skewed]


@pytest.mark.parametrize("supported", [True, False])
async def test_a_read_starts_near_the_window_by_record_time_or_at_the_beginning(
    broker: Topics, supported: bool
) -> None:
    broker.time_lookup_supported = supported
    for minute in range(60, 0, -1):
        broker.publish(event_at(NOW - timedelta(minutes=minute), "ord-old", partition=0))
    inside = broker.publish(event_at(NOW, "ord-1", partition=0))
    consumer = broker.consumer(group_id=None, enable_auto_commit=False)

    found = await window_of(broker, Window(NOW, NOW + timedelta(1)), "order.events", consumer=consumer)

    assert found == [inside]
    # 61 records, two a fetch: a seek by time skips the hour before the window but its last 5 minutes.
    assert consumer.fetches <= (4 if supported else 31)


async def test_a_read_ends_once_it_has_caught_up_though_records_keep_arriving(broker: Topics) -> None:
    window = Window(NOW, NOW + timedelta(hours=1))
    first = [broker.publish(event_at(NOW, f"ord-{n}", partition=0)) for n in range(5)]
    broker.after_fetch.append(lambda: broker.publish(event_at(NOW, "ord-later", partition=0)))

    found = await window_of(broker, window, "order.events")

    assert found[:5] == first
    assert all(record.key == b"ord-later" for record in found[5:])


@pytest.mark.parametrize("lag", [1, 3, 10])
async def test_a_read_gets_the_whole_last_batch_when_the_broker_reports_its_start_as_the_end(
    broker: Topics, lag: int
) -> None:
    broker.latest_lags_by = lag
    published = [broker.publish(event_at(NOW, f"ord-{n}", partition=n % 3)) for n in range(9)]

    found = await window_of(broker, Window(NOW, NOW + timedelta(1)), "order.events")

    assert sorted(found, key=lambda r: (r.partition, r.offset)) == sorted(
        published, key=lambda r: (r.partition, r.offset)
    )


async def test_records_that_are_not_events_are_placed_by_their_kafka_time(broker: Topics) -> None:
    stamp = int(NOW.timestamp() * MS)
    garbage = broker.publish(Record(value=b"garbage", partition=1, timestamp=stamp))
    broker.publish(Record(value=b"garbage", partition=1, timestamp=stamp - 3_600 * MS))

    assert await window_of(broker, Window(NOW, NOW + timedelta(1)), "order.events") == [garbage]


async def test_a_window_read_of_several_topics_reads_each(broker: Topics) -> None:
    broker.create("payment.events", 1)
    order = broker.publish(event_at(NOW, "ord-1", partition=0))
    payment = broker.publish(replace(event_at(NOW, "ord-1", partition=0), topic="payment.events"))

    found = await window_of(broker, Window(NOW, NOW + timedelta(1)), "order.events", "payment.events")

    assert sorted(found, key=lambda record: record.topic) == [order, payment]


async def test_a_missing_topic_is_named_with_the_topics_there_are(broker: Topics) -> None:
    broker.create("__consumer_offsets", 1)
    with pytest.raises(
        streams.ToolError, match=r"there is no topic 'orders' on the broker \(its topics: order.events\)"
    ):
        await window_of(broker, Window(NOW, NOW + timedelta(1)), "orders")


# --- tail -------------------------------------------------------------------------------------------


async def test_tail_from_the_beginning_shows_the_chosen_orders_events_until_max(broker: Topics) -> None:
    for n in range(6):
        broker.publish(event_at(NOW + timedelta(seconds=n), f"ord-{n % 2}", partition=n % 3))
    shown: list[str] = []

    count = await streams.tail(
        "kafka:9092",
        "order.events",
        Selection(order_id="ord-1"),
        emit=shown.append,
        from_beginning=True,
        max_events=2,
    )

    assert count == 2
    assert [block.splitlines()[0][-5:] for block in shown] == ["ord-1", "ord-1"]
    assert shown[0].startswith("2026-11-26T09:30:01.000Z"), "oldest first"


async def test_tail_without_from_beginning_shows_only_what_arrives_and_stops_when_idle(
    broker: Topics,
) -> None:
    broker.publish(event_at(NOW, "ord-old", partition=0))
    arrivals = [event_at(NOW + timedelta(seconds=1), "ord-new", partition=1)]
    broker.after_fetch.append(lambda: arrivals and broker.publish(arrivals.pop()))
    shown: list[str] = []

    count = await streams.tail("kafka:9092", "order.events", Selection(), emit=shown.append, idle_exit_s=0.05)

    assert count == 1 and "ord-new" in shown[0] and "ord-old" not in shown[0]


async def test_tail_at_the_end_skips_the_rest_of_a_last_batch_the_broker_reported_as_the_end(
    broker: Topics,
) -> None:
    broker.latest_lags_by = 3
    for n in range(5):
        broker.publish(event_at(NOW, f"ord-old-{n}", partition=0))
    arrivals = [event_at(NOW, "ord-new", partition=0)]
    broker.after_fetch.append(lambda: arrivals and broker.publish(arrivals.pop()))
    shown: list[str] = []

    await streams.tail("kafka:9092", "order.events", Selection(), emit=shown.append, idle_exit_s=0.05)

    assert len(shown) == 1 and "ord-new" in shown[0]


async def test_tail_cuts_personal_data_unless_asked(broker: Topics) -> None:
    envelope = rejected().model_copy(update={"data": {"order_id": "ord-1", "token": "tok_secret"}})
    broker.publish(record_of(envelope, partition=0))

    for personal_data, visible in [(False, False), (True, True)]:
        shown: list[str] = []
        await streams.tail(
            "kafka:9092", "order.events", Selection(), emit=shown.append, from_beginning=True,
            max_events=1, personal_data=personal_data,
        )  # fmt: skip
        assert ("tok_secret" in shown[0]) is visible

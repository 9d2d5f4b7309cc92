"""Timed messages of the real payload size: sent at full blast or at a fixed rate, timed on arrival.

Each record carries its send time in a header, so any path (one topic, or a chain of hops that
forward headers) can be timed end to end by the process that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench.plan import Plan
from bench.results import MessagingCeiling
from bench.stats import latency
from devstack.processes import eventually
from shared.contracts import OrderLine, OrderPlaced, PaymentMethod, ShippingAddress
from shared.kafka import encode, make_consumer, new_envelope
from shared.settings import SharedSettings

SENT_AT = "bench-sent-ns"
KEYS = 64  # distinct keys, so that records spread over every partition as orders do
WARM_UP_MESSAGES = 20
SEND_CHUNK = 1000


def order_placed_payload() -> bytes:
    """An encoded OrderPlaced envelope, as the order service publishes one."""
    order_id = str(uuid.uuid4())
    event = OrderPlaced(
        order_id=order_id,
        order_no="20261126000000001",
        customer_id="bench-customer-0000001",
        lines=[
            OrderLine(
                sku="BENCH-SKU",
                name="Benchmark tea bag",
                merchant_id="bench-m",
                quantity=1,
                unit_price_fen=100,
            )
        ],
        total_fen=100,
        payment_method=PaymentMethod.BANK_CARD,
        shipping_address=ShippingAddress(
            name="Wang Fang",
            phone="13700137000",
            province="Sichuan",
            city="Chengdu",
            district="Wuhou",
            line1="1 Kehua Rd",
            postal_code="610041",
        ),
        placed_at=datetime.now(UTC),
    )
    return encode(new_envelope(event, source="order", correlation_id=str(uuid.uuid4())))


@dataclass
class Arrivals:
    """Reads a topic with the services' consumer settings and times what arrives by its send stamp."""

    settings: SharedSettings
    topic: str
    count: int = 0
    last_at: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The services' consumer settings, but partitions assigned rather than a group joined: the
        # arrivals are timed from the first record on, with no rebalance to wait for.
        consumer = make_consumer(self.settings, group_id=f"bench-arrivals-{uuid.uuid4().hex[:8]}", topics=[])
        await consumer.start()
        try:
            partitions = await eventually(
                lambda: _partitions(consumer, self.topic), bool, what=f"topic {self.topic} in the metadata"
            )
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._task = asyncio.create_task(self._read(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        self.count = 0
        self.latencies_s = []

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                polled = await consumer.getmany(
                    timeout_ms=self.settings.consumer_poll_timeout_ms,
                    max_records=self.settings.consumer_max_records,
                )
                now = time.monotonic_ns()
                for records in polled.values():
                    for record in records:
                        sent = dict(record.headers).get(SENT_AT)
                        if sent is not None:
                            self.latencies_s.append((now - int(sent)) / 1e9)
                    self.count += len(records)
                if polled:
                    self.last_at = now / 1e9
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, *, what: str, timeout_s: float) -> None:
        async def arrived() -> int:
            return self.count

        await eventually(arrived, lambda n: n >= count, what=what, timeout_s=timeout_s, interval_s=0.02)


async def send_blast(producer: AIOKafkaProducer, topic: str, payload: bytes, count: int) -> None:
    """`count` records as fast as the producer takes them."""
    pending = []
    for index in range(count):
        key = str(index % KEYS).encode()
        pending.append(await producer.send(topic, payload, key=key, headers=[(SENT_AT, _now())]))
        if len(pending) >= SEND_CHUNK:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def send_paced(producer: AIOKafkaProducer, topic: str, payload: bytes, rate: float, count: int) -> None:
    """`count` records at `rate` a second, each stamped when it is handed to the producer."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = []
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        key = str(index % KEYS).encode()
        pending.append(await producer.send(topic, payload, key=key, headers=[(SENT_AT, _now())]))
    await asyncio.gather(*pending)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await consumer.topics()
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def _now() -> bytes:
    return str(time.monotonic_ns()).encode()


async def measure_path(
    *,
    path: str,
    settings: SharedSettings,
    producer: AIOKafkaProducer,
    entry: str,
    exit_topic: str,
    plan: Plan,
) -> MessagingCeiling:
    """Warm the path up, then its msgs/s at full blast and its latency at `plan.probe_rate`."""
    payload = order_placed_payload()
    arrivals = Arrivals(settings, exit_topic)
    await arrivals.start()
    try:
        await send_blast(producer, entry, payload, WARM_UP_MESSAGES)
        await arrivals.wait_for(
            WARM_UP_MESSAGES,
            what=f"the first messages through the {path} (consumer groups joined)",
            timeout_s=90,
        )
        arrivals.reset()
        started = time.monotonic()
        await send_blast(producer, entry, payload, plan.blast_messages)
        await arrivals.wait_for(
            plan.blast_messages, what=f"{plan.blast_messages} messages through the {path}", timeout_s=120
        )
        msgs_per_s = plan.blast_messages / (arrivals.last_at - started)
        arrivals.reset()
        probes = round(plan.probe_rate * plan.probe_s)
        await send_paced(producer, entry, payload, plan.probe_rate, probes)
        await arrivals.wait_for(probes, what=f"{probes} paced messages through the {path}", timeout_s=60)
        return MessagingCeiling(
            path=path,
            payload_bytes=len(payload),
            blast_messages=plan.blast_messages,
            msgs_per_s=msgs_per_s,
            probe_rate=plan.probe_rate,
            latency=latency(arrivals.latencies_s),
        )
    finally:
        await arrivals.stop()


async def create_topics(settings: SharedSettings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.topic_partitions, 1) for name in names])
    finally:
        await admin.close()


async def delete_topics(settings: SharedSettings, names: list[str]) -> None:
    """The broker keeps every record in memory: what the ceilings sent must not weigh on the saga."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        with contextlib.suppress(KafkaError):
            await admin.delete_topics(names)
    finally:
        await admin.close()

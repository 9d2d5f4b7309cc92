"""The event catalog against the wire: every event the test run produced is one schemas/asyncapi.yaml lists.

The file's name sorts last, so that when it reads the topics from the beginning they hold the whole
run's events; it also produces the saga's main outcomes itself, so that it means something when run
alone. Each record must be one of its topic's messages: its type and version listed, its payload
valid against the JSON Schemas, its headers and key as documented; each dead letter must carry the
documented `dlq_*` headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from shared.kafka import decode, record_headers
from shopctl.catalog.wire import WireContract
from tests.integration.conftest import Platform
from tests.integration.harness import TEST_PORTS, eventually

ROOT = Path(__file__).resolve().parents[2]
# The stack's services. A record whose envelope names another source was put on a topic by a test on
# purpose (the dead-letter tests' poison), not emitted by the platform.
SERVICES = frozenset(TEST_PORTS)
# What this test's own orders make the services emit: a confirmed, a declined, a fraud-rejected and an
# out-of-stock order, with their products and merchants.
PRODUCED = {
    "inventory.merchant_upserted",
    "inventory.product_upserted",
    "order.placed",
    "fraud.scored",
    "inventory.stock_reserved",
    "inventory.stock_rejected",
    "order.payment_requested",
    "payment.authorized",
    "order.confirmed",
    "inventory.stock_committed",
    "payment.failed",
    "order.cancelled",
    "order.rejected",
    "inventory.stock_released",
    "notification.sent",
}


@dataclass
class Wire:
    """What the catalogued topics hold: the platform's event types per topic, and every mismatch."""

    types: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def type_names(self) -> set[str]:
        return {name for found in self.types.values() for name, _ in found}


async def existing_topics(platform: Platform) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def read_wire(platform: Platform, catalog: WireContract) -> Wire:
    wire = Wire()
    present = await existing_topics(platform)
    for topic in catalog.topics():
        if topic not in present:
            continue  # nothing was ever published to it in this run
        for record in await platform.raw_records(topic):
            where = f"{topic} partition {record.partition} offset {record.offset}"
            headers = list(record_headers(record))
            if not topic.endswith(".dlq"):
                try:
                    envelope = decode(record.value)
                except ValueError:
                    continue  # bytes a test sent as poison: no service wrote them
                if envelope.source not in SERVICES:
                    continue
                wire.types.setdefault(topic, set()).add((envelope.type, envelope.version))
            problems = catalog.problems(topic, record.key, record.value, headers)
            wire.problems += [f"{where}: {problem}" for problem in problems]
    return wire


async def test_every_event_on_the_wire_is_a_message_of_its_topic_in_the_asyncapi_document(
    platform: Platform,
) -> None:
    catalog = WireContract.load(ROOT / "schemas")
    sku = await platform.product(available=5)
    sold_out = await platform.product(available=0)
    orders = [
        await platform.place([(sku, 1)]),
        await platform.place([(sku, 1)], token="tok_decline"),
        await platform.place([(sku, 1)], customer_id="cust-blocked-demo"),
        await platform.place([(sold_out, 1)]),
    ]
    settled = [await platform.settled(placed["order_id"]) for placed in orders]
    assert [(order["status"], order["reason"]) for order in settled] == [
        ("CONFIRMED", None),
        ("CANCELLED", "PAYMENT_DECLINED"),
        ("REJECTED", "FRAUD"),
        ("REJECTED", "OUT_OF_STOCK"),
    ]

    async def type_names() -> set[str]:
        return (await read_wire(platform, catalog)).type_names()

    await eventually(
        type_names,
        lambda seen: PRODUCED <= seen,
        what="every event type these orders cause to be on the topics",
        timeout_s=60,
        interval_s=1.0,
    )
    wire = await read_wire(platform, catalog)

    unlisted = {
        topic: sorted(found - catalog.event_types(topic))
        for topic, found in wire.types.items()
        if found - catalog.event_types(topic)
    }
    assert unlisted == {}, "event types on the wire that schemas/asyncapi.yaml does not list for their topic"
    assert wire.problems == [], f"{len(wire.problems)} records differ from the catalog: {wire.problems[:20]}"

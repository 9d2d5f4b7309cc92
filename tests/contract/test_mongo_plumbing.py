"""The Mongo plumbing every service stands on: applied ids expire, a concurrent apply is recognised,
and the outbox relay keeps each key's events in order through a partial send failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from shared.contracts import Envelope, FraudDecision, FraudScored
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite
from shared.kafka import decode, new_envelope
from shared.mongo import OUTBOX, PROCESSED, MongoStore, OutboxRelay, ensure_ttl_index
from shared.settings import SharedSettings


def scored(order_id: str, score: int) -> Envelope:
    event = FraudScored(order_id=order_id, decision=FraudDecision.APPROVE, score=score)
    return new_envelope(event, source="test", correlation_id=order_id)


@dataclass
class FaultyProducer:
    """Acknowledges sends in order, except those it is told to fail (once each), as a broker would."""

    fail_ack: set[str] = field(default_factory=set)
    fail_send: set[str] = field(default_factory=set)
    landed: list[Envelope] = field(default_factory=list)

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any) -> asyncio.Future[None]:
        envelope = decode(value)
        if envelope.id in self.fail_send:
            self.fail_send.discard(envelope.id)
            raise KafkaTimeoutError("metadata not available")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if envelope.id in self.fail_ack:
            self.fail_ack.discard(envelope.id)
            ack.set_exception(NotLeaderForPartitionError())
        else:
            self.landed.append(envelope)
            ack.set_result(None)
        return ack


def relay(store: MongoStore, producer: FaultyProducer, settings: SharedSettings) -> OutboxRelay:
    return OutboxRelay(service="test", store=store, producer=producer, settings=settings)


async def outbox(store: MongoStore, *envelopes: Envelope) -> None:
    async with store.transaction("test") as tx:
        tx.emit(envelopes)


def per_key(landed: list[Envelope]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for envelope in landed:
        keys.setdefault(envelope.subject, []).append(envelope.id)
    return keys


@pytest.mark.parametrize("fault", ["fail_ack", "fail_send"])
async def test_a_failed_send_never_lets_a_later_event_of_its_key_land_first(
    mongo_store: MongoStore, settings: SharedSettings, fault: str
) -> None:
    a1, a2, b1, a3, b2 = scored("A", 1), scored("A", 2), scored("B", 1), scored("A", 3), scored("B", 2)
    await outbox(mongo_store, a1, a2, b1, a3, b2)
    producer = FaultyProducer(fail_ack={a1.id}) if fault == "fail_ack" else FaultyProducer(fail_send={a1.id})

    with pytest.raises((KafkaTimeoutError, NotLeaderForPartitionError)):
        await relay(mongo_store, producer, settings).publish_pending()

    assert [e for e in producer.landed if e.subject == "A"] == [], (
        "nothing of A went out past its failed event"
    )
    assert producer.landed in ([], [b1]), "only B's first event may have gone out beside it"
    left = 5 - len(producer.landed)
    assert await mongo_store.db[OUTBOX].count_documents({}) == left, (
        "what landed left the outbox, the rest stays"
    )

    assert await relay(mongo_store, producer, settings).publish_pending() == left

    assert per_key(producer.landed) == {"A": [a1.id, a2.id, a3.id], "B": [b1.id, b2.id]}
    assert await mongo_store.db[OUTBOX].count_documents({}) == 0


async def test_applied_event_ids_expire_through_a_ttl_index(
    mongo_store: MongoStore, settings: SharedSettings
) -> None:
    indexes = [index async for index in await mongo_store.db[PROCESSED].list_indexes()]
    ttl = [index for index in indexes if dict(index["key"]) == {"at": 1}]
    assert [index.get("expireAfterSeconds") for index in ttl] == [int(settings.processed_event_ttl_s)]

    await ensure_ttl_index(mongo_store.db[PROCESSED], "at", 3600)

    indexes = [index async for index in await mongo_store.db[PROCESSED].list_indexes()]
    assert [index.get("expireAfterSeconds") for index in indexes if dict(index["key"]) == {"at": 1}] == [
        3600
    ], "a changed lifetime replaces the index instead of failing on a conflict"


async def test_an_event_applied_concurrently_is_a_concurrent_write_not_poison(
    mongo_store: MongoStore,
) -> None:
    async with mongo_store.transaction("inventory") as tx:
        tx.mark_applied(["e-1"])

    with pytest.raises(ConcurrentWrite, match="applied concurrently"):
        async with mongo_store.transaction("inventory") as tx:
            tx.mark_applied(["e-2", "e-1"])
            tx.emit([scored("A", 1)])

    assert await mongo_store.db[PROCESSED].count_documents({}) == 1
    assert await mongo_store.db[OUTBOX].count_documents({}) == 0, "the losing transaction wrote nothing"


async def test_a_sealed_outbox_holds_no_event_in_clear_and_publishes_it_as_it_was(
    mongo_store: MongoStore, settings: SharedSettings
) -> None:
    sealed_store = MongoStore(
        mongo_store.client, mongo_store.db.name, sealer=PersonalData.from_settings(settings)
    )
    event = scored("order-with-an-address", 7)
    await outbox(sealed_store, event)

    [stored] = await sealed_store.db[OUTBOX].find().to_list()
    assert "value" not in stored and "order-with-an-address" not in stored["sealed_value"]
    producer = FaultyProducer()
    assert await relay(sealed_store, producer, settings).publish_pending() == 1
    assert producer.landed == [event]

"""MongoDB plumbing: idempotent apply and the transactional outbox, written once for every service.

A handler opens `store.transaction(consumer)`, makes its state change through `tx.session`, marks
the events it applied and emits the events it caused. All of it commits in one transaction, so a
crash leaves either everything or nothing. The relay then publishes the outbox in insertion order,
which keeps each key's events in order; a crash between publish and delete republishes the same
envelopes (same ids), which consumers skip as already applied.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared import metrics
from shared.contracts.base import Envelope
from shared.errors import ConcurrentWrite
from shared.kafka import Delivery, encode, first_unseen, headers_for, topic_for
from shared.logging import get_logger
from shared.memory import RecordingTransaction
from shared.settings import SharedSettings

log = get_logger(__name__)

Document = dict[str, Any]
OUTBOX = "outbox"
PROCESSED = "processed_events"
LEASES = "leases"
PROCESSED_RETENTION = timedelta(days=7)


def make_client(settings: SharedSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000, appname="order-platform"
    )


@dataclass(kw_only=True)
class Transaction(RecordingTransaction):
    """What one handler writes atomically: its own collections, applied event ids, the outbox."""

    db: AsyncDatabase[Document]
    session: AsyncClientSession
    consumer: str


class MongoStore:
    """A service's database with its processed-event record and outbox."""

    def __init__(self, client: AsyncMongoClient[Document], db_name: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Document] = client[db_name]
        self.outbox_written = asyncio.Event()

    async def ensure_plumbing_indexes(self) -> None:
        await self.db[PROCESSED].create_index([("at", ASCENDING)])

    async def wait_until_reachable(self, deadline_s: float = 60.0) -> None:
        """Services may start before their database; wait for it rather than crash-loop."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        while not await self.ping():
            if loop.time() > until:
                raise TimeoutError(f"MongoDB did not answer within {deadline_s}s")
            await asyncio.sleep(0.5)

    async def ping(self) -> bool:
        try:
            await self.db.command("ping")
            return True
        except PyMongoError:
            return False

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries this consumer has not applied yet (redeliveries dropped, first wins)."""
        ids = [f"{consumer}:{d.envelope.id}" for d in deliveries]
        seen = {doc["_id"] async for doc in self.db[PROCESSED].find({"_id": {"$in": ids}}, {"_id": 1})}
        fresh, duplicates = first_unseen(consumer, deliveries, seen)
        for delivery in duplicates:
            metrics.EVENTS_DUPLICATE.labels(consumer, delivery.envelope.type).inc()
        return fresh

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[Transaction]:
        """One atomic write: the caller's changes + processed ids + outbox entries.

        A concurrent apply of the same event loses on the processed-id unique key and the whole
        transaction rolls back, so nothing is applied twice.
        """
        async with self.client.start_session() as session:
            async with await session.start_transaction():
                tx = Transaction(db=self.db, session=session, consumer=consumer)
                yield tx
                now = datetime.now(UTC)
                if tx.applied:
                    try:
                        await self.db[PROCESSED].insert_many(
                            [{"_id": f"{consumer}:{eid}", "at": now} for eid in tx.applied],
                            session=session,
                        )
                    except DuplicateKeyError as error:
                        # Another consumer (a rebalance's new owner) applied it first; a retry
                        # filters it out through `unapplied`.
                        raise ConcurrentWrite(f"event applied concurrently: {error}") from error
                if tx.outgoing:
                    await self.db[OUTBOX].insert_many(
                        [_outbox_document(env, now) for env in tx.outgoing], session=session
                    )
        if tx.outgoing:
            self.outbox_written.set()

    async def forget_processed_before(self, cutoff: datetime) -> int:
        result = await self.db[PROCESSED].delete_many({"at": {"$lt": cutoff}})
        return int(result.deleted_count)


def _outbox_document(envelope: Envelope, now: datetime) -> Document:
    return {
        "topic": topic_for(envelope),
        "key": envelope.subject,
        "value": encode(envelope),
        "headers": [[name, value] for name, value in headers_for(envelope)],
        "created_at": now,
    }


class OutboxRelay:
    """Publishes the outbox in `_id` order. Only the lease holder publishes, so replicas of a
    service never interleave one key's events."""

    def __init__(
        self,
        *,
        service: str,
        store: MongoStore,
        producer: AIOKafkaProducer,
        settings: SharedSettings,
        batch_size: int = 500,
        lease_s: float = 10.0,
    ) -> None:
        self._service = service
        self._store = store
        self._producer = producer
        self._poll_s = settings.outbox_poll_interval_s
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_s)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._lease_until = datetime.min.replace(tzinfo=UTC)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            published = 0
            try:
                if await self._hold_lease():
                    published = await self.publish_pending()
            except (PyMongoError, KafkaError) as error:
                log.warning("outbox_relay_error", error=str(error))
            if published < self._batch_size:
                await self._wait(stop)
        # Drain what the last handled batch emitted before the process goes.
        try:
            if await self._hold_lease():
                await self.publish_pending()
        finally:
            await self._release_lease()

    async def _wait(self, stop: asyncio.Event) -> None:
        written = self._store.outbox_written
        waiters = [asyncio.ensure_future(written.wait()), asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waiters, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        written.clear()

    async def publish_pending(self) -> int:
        outbox = self._store.db[OUTBOX]
        docs = await outbox.find().sort("_id", ASCENDING).limit(self._batch_size).to_list()
        metrics.OUTBOX_BACKLOG.labels(self._service).set(len(docs))
        if not docs:
            return 0
        futures = [
            await self._producer.send(
                doc["topic"],
                doc["value"],
                key=doc["key"].encode(),
                headers=[(name, bytes(value)) for name, value in doc["headers"]],
            )
            for doc in docs
        ]
        await asyncio.gather(*futures)
        await outbox.delete_many({"_id": {"$in": [doc["_id"] for doc in docs]}})
        for doc in docs:
            metrics.EVENTS_PUBLISHED.labels(self._service, doc["topic"]).inc()
        return len(docs)

    async def _hold_lease(self) -> bool:
        now = datetime.now(UTC)
        if self._lease_until - now > self._lease / 2:
            return True
        leases = self._store.db[LEASES]
        try:
            await leases.find_one_and_update(
                {
                    "_id": "outbox-relay",
                    "$or": [{"owner": self._owner}, {"expires_at": {"$lt": now}}],
                },
                {"$set": {"owner": self._owner, "expires_at": now + self._lease}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False  # another replica holds it
        self._lease_until = now + self._lease
        return True

    async def _release_lease(self) -> None:
        try:
            await self._store.db[LEASES].delete_one({"_id": "outbox-relay", "owner": self._owner})
        except PyMongoError as error:
            log.warning("lease_release_failed", error=str(error))

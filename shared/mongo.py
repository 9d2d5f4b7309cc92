"""MongoDB plumbing: idempotent apply and the transactional outbox, written once for every service.

A handler opens `store.transaction(consumer)`, makes its state change through `tx.session`, marks
the events it applied and emits the events it caused. All of it commits in one transaction with
write concern majority, so a crash or a failover leaves either everything or nothing. The relay
then publishes the outbox in insertion order, which keeps each key's events in order; a crash
between publish and delete republishes the same envelopes (same ids), which consumers skip as
already applied. Applied ids expire through a TTL index after `processed_event_ttl_s`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared import metrics
from shared.contracts.base import Envelope
from shared.errors import ConcurrentWrite, Outage
from shared.kafka import Delivery, describe, encode, first_unseen, headers_for, topic_for
from shared.logging import get_logger
from shared.settings import SharedSettings
from shared.store import PendingWrites

log = get_logger(__name__)

Document = dict[str, Any]
OUTBOX = "outbox"
PROCESSED = "processed_events"
LEASES = "leases"
DUPLICATE_KEY = 11000
# A write acknowledged by a majority survives a failover; a w:1 write may be rolled back after its
# event's offset was committed, and that event would be lost.
MAJORITY = WriteConcern("majority")


class Sealer(Protocol):
    """Encrypts text at rest (shared.crypto.PersonalData): the outbox holds events with addresses."""

    def seal(self, text: str) -> str: ...

    def open(self, sealed: str) -> str: ...


def make_client(settings: SharedSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.mongo_url.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname="order-platform",
        w="majority",
    )


def is_duplicate_key(error: PyMongoError) -> bool:
    """A unique index refused a write: DuplicateKeyError from single writes, BulkWriteError from bulk."""
    if isinstance(error, DuplicateKeyError):
        return True
    return isinstance(error, BulkWriteError) and duplicate_at(error) is not None


def duplicate_at(error: BulkWriteError) -> tuple[int, Mapping[str, Any]] | None:
    """Where a bulk write hit a unique index: the failing operation's index and the index's key."""
    for write_error in error.details.get("writeErrors", []):
        if write_error.get("code") == DUPLICATE_KEY:
            return int(write_error["index"]), write_error.get("keyPattern") or {}
    return None


async def ensure_ttl_index(collection: AsyncCollection[Document], field: str, ttl_s: float) -> None:
    """Documents expire `ttl_s` after their `field`; an index there with another lifetime is replaced."""
    expire_after = int(ttl_s)
    async for index in await collection.list_indexes():
        if dict(index["key"]) == {field: ASCENDING}:
            if index.get("expireAfterSeconds") == expire_after:
                return
            await collection.drop_index(index["name"])
    await collection.create_index([(field, ASCENDING)], expireAfterSeconds=expire_after)


@dataclass(kw_only=True)
class Transaction(PendingWrites):
    """What one handler writes atomically: its own collections, applied event ids, the outbox."""

    db: AsyncDatabase[Document]
    session: AsyncClientSession
    consumer: str


class MongoStore:
    """A service's database with its processed-event record and outbox."""

    def __init__(
        self, client: AsyncMongoClient[Document], db_name: str, *, sealer: Sealer | None = None
    ) -> None:
        self.client = client
        self.db: AsyncDatabase[Document] = client[db_name]
        self.outbox_written = asyncio.Event()
        # Outbox entries are sealed when given one: an OrderPlaced carries a shipping address, and
        # even the few milliseconds it waits for the relay is personal data at rest.
        self.sealer = sealer

    async def ensure_plumbing_indexes(self, settings: SharedSettings) -> None:
        await ensure_ttl_index(self.db[PROCESSED], "at", settings.processed_event_ttl_s)

    async def wait_until_reachable(self, settings: SharedSettings) -> None:
        """Services may start before their database; wait for it rather than crash-loop, and give up
        (DependencyLost) after `dependency_outage_limit_s`."""
        outage = Outage(f"MongoDB database {self.db.name}", settings.dependency_outage_limit_s)
        while True:
            try:
                await self.db.command("ping")
                return
            except PyMongoError as error:
                outage.failed(error)
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
            async with await session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=MAJORITY
            ):
                tx = Transaction(db=self.db, session=session, consumer=consumer)
                yield tx
                now = datetime.now(UTC)
                if tx.applied:
                    try:
                        await self.db[PROCESSED].insert_many(
                            [{"_id": f"{consumer}:{eid}", "at": now} for eid in tx.applied],
                            session=session,
                        )
                    except PyMongoError as error:
                        if not is_duplicate_key(error):
                            raise
                        # Another consumer (a rebalance's new owner) applied it first; a retry
                        # filters it out through `unapplied`.
                        raise ConcurrentWrite(f"event applied concurrently: {describe(error)}") from error
                if tx.outgoing:
                    await self.db[OUTBOX].insert_many(
                        [_outbox_document(env, now, self.sealer) for env in tx.outgoing],
                        session=session,
                    )
        if tx.outgoing:
            self.outbox_written.set()


@dataclass
class TransactionView:
    """Base of a service's view of one transaction: its own writes go through `tx.session`, and
    the applied ids and emitted events to the shared transaction."""

    tx: Transaction

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.tx.mark_applied(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.tx.emit(envelopes)


View = TypeVar("View", bound=TransactionView)


class ServiceStore(Generic[View]):
    """Base of a service's Mongo store: apply-once bookkeeping, and transactions seen as `view`."""

    def __init__(self, store: MongoStore, view: Callable[[Transaction], View]) -> None:
        self.base = store
        self._view = view

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return await self.base.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[View]:
        async with self.base.transaction(consumer) as tx:
            yield self._view(tx)


def _outbox_document(envelope: Envelope, now: datetime, sealer: Sealer | None) -> Document:
    value = encode(envelope)
    return {
        "topic": topic_for(envelope),
        "key": envelope.subject,
        **({"value": value} if sealer is None else {"sealed_value": sealer.seal(value.decode())}),
        "headers": [[name, value] for name, value in headers_for(envelope)],
        "created_at": now,
    }


def _outbox_value(doc: Document, sealer: Sealer | None) -> bytes:
    """The record value of an outbox entry, opened if it was sealed."""
    if "value" in doc:
        return bytes(doc["value"])
    if sealer is None:
        raise RuntimeError("a sealed outbox entry, and this store has no key to open it")
    return sealer.open(doc["sealed_value"]).encode()


def per_key_waves(docs: Sequence[Document]) -> list[list[Document]]:
    """Split outbox entries into waves holding at most one entry per (topic, key), in outbox order.

    A wave is sent only once the one before it is acknowledged whole, so an entry never reaches the
    broker before an earlier entry of its key, even when a send fails part-way."""
    waves: list[list[Document]] = []
    depth: dict[tuple[str, str], int] = {}
    for doc in docs:
        key = (doc["topic"], doc["key"])
        index = depth.get(key, 0)
        depth[key] = index + 1
        if index == len(waves):
            waves.append([])
        waves[index].append(doc)
    return waves


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
        self._outage = Outage("the outbox relay (broker or datastore)", settings.dependency_outage_limit_s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            published = 0
            try:
                if await self._hold_lease():
                    published = await self.publish_pending()
                self._outage.recovered()
            except (PyMongoError, KafkaError) as error:
                self._outage.failed(error)
                log.warning("outbox_relay_error", error=describe(error))
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
        """Publish the oldest outbox entries and delete what the broker acknowledged.

        Stops at the first failed send: the entries from there on stay in the outbox and are sent
        again, in order, on the next pass. Raises what failed, after deleting what was published."""
        outbox = self._store.db[OUTBOX]
        docs = await outbox.find().sort("_id", ASCENDING).limit(self._batch_size).to_list()
        metrics.OUTBOX_BACKLOG.labels(self._service).set(len(docs))
        published: list[Document] = []
        try:
            for wave in per_key_waves(docs):
                sent, failure = await self._send(wave)
                published.extend(sent)
                if failure is not None:
                    raise failure
        finally:
            if published:
                await outbox.delete_many({"_id": {"$in": [doc["_id"] for doc in published]}})
                for doc in published:
                    metrics.EVENTS_PUBLISHED.labels(self._service, doc["topic"]).inc()
        return len(published)

    async def _send(self, wave: Sequence[Document]) -> tuple[list[Document], BaseException | None]:
        """Send a wave; the entries the broker acknowledged, and the first failure if any."""
        futures: list[tuple[Document, asyncio.Future[Any]]] = []
        failure: BaseException | None = None
        for doc in wave:
            try:
                future = await self._producer.send(
                    doc["topic"],
                    _outbox_value(doc, self._store.sealer),
                    key=doc["key"].encode(),
                    headers=[(name, bytes(value)) for name, value in doc["headers"]],
                )
            except KafkaError as error:
                failure = error
                break
            futures.append((doc, future))
        outcomes = await asyncio.gather(*(future for _, future in futures), return_exceptions=True)
        sent = []
        for (doc, _), outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                sent.append(doc)
        return sent, failure

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
        except PyMongoError as error:
            if is_duplicate_key(error):
                return False  # another replica holds it
            raise
        self._lease_until = now + self._lease
        return True

    async def _release_lease(self) -> None:
        try:
            await self._store.db[LEASES].delete_one({"_id": "outbox-relay", "owner": self._owner})
        except PyMongoError as error:
            log.warning("lease_release_failed", error=str(error))

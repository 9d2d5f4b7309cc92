"""The notification log: the store protocol, its MongoDB implementation and an in-memory twin for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pymongo import ASCENDING, UpdateOne

from services.notification.domain import Notification, Status
from shared.contracts import Envelope, Role
from shared.kafka import Delivery
from shared.memory import AppliedLedger, RecordingTransaction
from shared.mongo import Document, MongoStore, Transaction

NOTIFICATIONS = "notifications"


class NotificationTransaction(Protocol):
    """One atomic write: notifications, the ids of the events applied, the events caused."""

    def mark_applied(self, event_ids: Sequence[str]) -> None: ...

    def emit(self, envelopes: Sequence[Envelope]) -> None: ...

    async def save(self, notifications: Sequence[Notification]) -> None: ...


class NotificationStore(Protocol):
    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]: ...

    def transaction(self, consumer: str) -> AbstractAsyncContextManager[NotificationTransaction]: ...

    async def existing(self, notification_ids: Iterable[str]) -> set[str]: ...

    async def find(
        self, *, order_id: str | None = None, recipient: str | None = None, limit: int = 100
    ) -> list[Notification]: ...


# --- MongoDB -------------------------------------------------------------------------------


@dataclass
class _MongoTransaction:
    tx: Transaction

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.tx.mark_applied(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.tx.emit(envelopes)

    async def save(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        # Insert-if-absent: a notification recorded once is never rewritten by a replay of its cause.
        # `seq` keeps the decided order among notifications stored at the same instant.
        writes = [
            UpdateOne(
                {"_id": n.notification_id},
                {"$setOnInsert": {**notification_to_doc(n), "seq": seq}},
                upsert=True,
            )
            for seq, n in enumerate(notifications)
        ]
        await self.tx.db[NOTIFICATIONS].bulk_write(writes, ordered=False, session=self.tx.session)


class MongoNotificationStore:
    def __init__(self, store: MongoStore) -> None:
        self.base = store
        self._notifications = store.db[NOTIFICATIONS]

    async def ensure_indexes(self) -> None:
        for field_name in ("order_id", "recipient"):
            await self._notifications.create_index(
                [(field_name, ASCENDING), ("at", ASCENDING), ("seq", ASCENDING)]
            )

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return await self.base.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[NotificationTransaction]:
        async with self.base.transaction(consumer) as tx:
            yield _MongoTransaction(tx)

    async def existing(self, notification_ids: Iterable[str]) -> set[str]:
        ids = list(set(notification_ids))
        if not ids:
            return set()
        return {doc["_id"] async for doc in self._notifications.find({"_id": {"$in": ids}}, {"_id": 1})}

    async def find(
        self, *, order_id: str | None = None, recipient: str | None = None, limit: int = 100
    ) -> list[Notification]:
        query = _query(order_id, recipient)
        cursor = self._notifications.find(query).sort([("at", ASCENDING), ("seq", ASCENDING)]).limit(limit)
        return [notification_from_doc(doc) async for doc in cursor]


def _query(order_id: str | None, recipient: str | None) -> Document:
    query: Document = {}
    if order_id is not None:
        query["order_id"] = order_id
    if recipient is not None:
        query["recipient"] = recipient
    return query


def notification_to_doc(notification: Notification) -> Document:
    return {
        "_id": notification.notification_id,
        "order_id": notification.order_id,
        "cause_id": notification.cause_id,
        "recipient": notification.recipient,
        "role": notification.role.value,
        "channel": notification.channel,
        "template": notification.template,
        "subject": notification.subject,
        "body": notification.body,
        "status": notification.status.value,
        "at": notification.at,
        "attempts": notification.attempts,
        "error": notification.error,
    }


def notification_from_doc(doc: Mapping[str, Any]) -> Notification:
    return Notification(
        notification_id=doc["_id"],
        order_id=doc["order_id"],
        cause_id=doc["cause_id"],
        recipient=doc["recipient"],
        role=Role(doc["role"]),
        channel=doc["channel"],
        template=doc["template"],
        subject=doc["subject"],
        body=doc["body"],
        at=doc["at"],
        status=Status(doc["status"]),
        attempts=doc["attempts"],
        error=doc.get("error"),
    )


# --- in memory (unit tests) ----------------------------------------------------------------


@dataclass
class _MemoryTransaction(RecordingTransaction):
    saved: list[Notification] = field(default_factory=list)

    async def save(self, notifications: Sequence[Notification]) -> None:
        self.saved.extend(notifications)


@dataclass
class InMemoryNotificationStore:
    """Keeps the Mongo store's guarantees (all-or-nothing, apply once, insert-if-absent) in dicts."""

    notifications: dict[str, Notification] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    @property
    def outbox(self) -> list[Envelope]:
        return self.ledger.outbox

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return self.ledger.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[NotificationTransaction]:
        tx = _MemoryTransaction()
        yield tx
        applied = self.ledger.claim(consumer, tx)
        for notification in tx.saved:
            self.notifications.setdefault(notification.notification_id, replace(notification))
        self.ledger.record(applied, tx)

    async def existing(self, notification_ids: Iterable[str]) -> set[str]:
        return set(notification_ids) & self.notifications.keys()

    async def find(
        self, *, order_id: str | None = None, recipient: str | None = None, limit: int = 100
    ) -> list[Notification]:
        found = [
            replace(n)
            for n in self.notifications.values()
            if (order_id is None or n.order_id == order_id)
            and (recipient is None or n.recipient == recipient)
        ]
        # Stable sort: ties keep insertion order, as `seq` keeps it in Mongo.
        return sorted(found, key=lambda n: n.at)[:limit]

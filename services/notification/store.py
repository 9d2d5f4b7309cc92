"""The notification log: the store protocol and its MongoDB implementation.

The in-memory twin for unit tests is tests/twins/notification.py; tests/contract/
test_notification_store.py holds both to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from bson import ObjectId
from pymongo import ASCENDING, UpdateOne

from services.notification.domain import Notification, Status
from shared.contracts import Role
from shared.mongo import Document, MongoStore, ServiceStore, TransactionView
from shared.store import EventStore, UnitOfWork

NOTIFICATIONS = "notifications"


class NotificationTransaction(UnitOfWork, Protocol):
    """One atomic write: notifications, the ids of the events applied, the events caused."""

    async def save(self, notifications: Sequence[Notification]) -> None:
        """Record each notification whose id is not recorded yet; a recorded one is left as it is."""
        ...


class NotificationStore(EventStore[NotificationTransaction], Protocol):
    async def existing(self, notification_ids: Iterable[str]) -> set[str]:
        """Which of these notification ids are recorded."""
        ...

    async def find(
        self, *, order_id: str | None = None, recipient: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """Up to `limit` notifications about the order and/or to the recipient, oldest first; those
        at the same instant in the order they were recorded."""
        ...


class _MongoTransaction(TransactionView):
    async def save(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        # Insert-if-absent: a notification recorded once is never rewritten by a replay of its cause.
        # `seq` orders notifications recorded at the same instant: a process's ObjectIds increase,
        # so it keeps the order of this list and of this process's earlier saves.
        writes = [
            UpdateOne(
                {"_id": n.notification_id},
                {"$setOnInsert": {**notification_to_doc(n), "seq": ObjectId()}},
                upsert=True,
            )
            for n in notifications
        ]
        await self.tx.db[NOTIFICATIONS].bulk_write(writes, ordered=False, session=self.tx.session)


class MongoNotificationStore(ServiceStore[_MongoTransaction]):
    def __init__(self, store: MongoStore) -> None:
        super().__init__(store, _MongoTransaction)
        self._notifications = store.db[NOTIFICATIONS]

    async def ensure_indexes(self) -> None:
        for field_name in ("order_id", "recipient"):
            await self._notifications.create_index(
                [(field_name, ASCENDING), ("at", ASCENDING), ("seq", ASCENDING)]
            )

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
        # Sealed by inventory with the shared key ring: stored as they came, never in clear.
        "sealed_codes": list(notification.sealed_codes),
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
        sealed_codes=tuple(doc.get("sealed_codes", ())),
    )

"""The notification store's in-memory twin: services.notification.store.NotificationStore in a dict.

tests/contract/test_notification_store.py runs the same suite against this and the Mongo store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from services.notification.domain import Notification
from services.notification.store import NotificationTransaction
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass
class _MemoryTransaction(PendingWrites):
    saved: list[Notification] = field(default_factory=list)

    async def save(self, notifications: Sequence[Notification]) -> None:
        # Copies: the Mongo store writes documents at this point, so later changes to these
        # objects do not reach what it commits.
        self.saved.extend(replace(n) for n in notifications)


@dataclass
class InMemoryNotificationStore(LedgerTwin):
    """Keeps the Mongo store's guarantees (all-or-nothing, apply once, insert-if-absent) in a dict."""

    # In the order they were recorded, which `find` keeps among notifications at the same instant.
    notifications: dict[str, Notification] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[NotificationTransaction]:
        tx = _MemoryTransaction()
        yield tx
        applied = self.ledger.claim(consumer, tx)
        for notification in tx.saved:
            self.notifications.setdefault(notification.notification_id, notification)
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
        # A stable sort: notifications at the same instant stay in the order they were recorded.
        return sorted(found, key=lambda n: n.at)[:limit]

"""The notification store's contract: what the handlers and the API rely on, held of the in-memory twin
and of Mongo."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.notification.domain import CUSTOMER_ORDER_CANCELLED, Notification, Status
from services.notification.store import MongoNotificationStore, NotificationStore
from shared.contracts import Envelope, NotificationSent, OrderCancelled, OrderEndReason, Role
from shared.errors import ConcurrentWrite
from shared.kafka import Delivery, decode, new_envelope
from shared.mongo import OUTBOX, MongoStore
from tests.twins.notification import InMemoryNotificationStore
from tests.unit.samples import delivery

CONSUMER = "notification"
# Whole seconds: MongoDB keeps datetimes to the millisecond.
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def notification(
    notification_id: str,
    *,
    order_id: str | None = "o-1",
    recipient: str = "c-1",
    at: datetime = T0,
    body: str = "您的订单已取消",
) -> Notification:
    return Notification(
        notification_id=notification_id,
        order_id=order_id,
        cause_id="e-1",
        recipient=recipient,
        role=Role.CUSTOMER,
        channel="inbox",
        template=CUSTOMER_ORDER_CANCELLED,
        subject="订单已取消",
        body=body,
        at=at,
        status=Status.SENT,
        attempts=1,
    )


def cancelled(order_id: str = "o-1") -> Delivery:
    return delivery(
        OrderCancelled(
            order_id=order_id, order_no="n-1", customer_id="c-1", reason=OrderEndReason.PAYMENT_TIMEOUT
        )
    )


def sent(note: Notification) -> Envelope:
    event = NotificationSent(
        order_id=note.order_id,
        notification_id=note.notification_id,
        recipient=note.recipient,
        role=note.role,
        channel=note.channel,
        template=note.template,
        status=note.status.value,
    )
    return new_envelope(event, source=CONSUMER, correlation_id="corr")


def ids(notifications: list[Notification]) -> list[str]:
    return [n.notification_id for n in notifications]


class NotificationStoreContract:
    """Subclasses provide the `store` fixture and read the outbox their way."""

    async def outbox_ids(self, store: NotificationStore) -> list[str]:
        raise NotImplementedError

    async def save(self, store: NotificationStore, *notifications: Notification) -> None:
        async with store.transaction(CONSUMER) as tx:
            await tx.save(notifications)

    async def test_saved_notifications_are_found_as_they_were_saved(self, store: NotificationStore) -> None:
        failed = replace(notification("n-2"), status=Status.FAILED, error="ConnectionError: down")

        await self.save(store, notification("n-1"), failed)

        assert await store.find(order_id="o-1") == [notification("n-1"), failed]

    async def test_the_sealed_codes_a_notification_carries_are_kept_as_they_came(
        self, store: NotificationStore
    ) -> None:
        with_codes = replace(notification("n-1"), sealed_codes=("v1.k1.c2VhbGVkLTE", "v1.k1.c2VhbGVkLTI"))

        await self.save(store, with_codes, notification("n-2"))

        assert await store.find(order_id="o-1") == [with_codes, notification("n-2")]

    async def test_saving_a_recorded_notification_again_keeps_the_first(
        self, store: NotificationStore
    ) -> None:
        await self.save(store, notification("n-1", body="first"))

        await self.save(store, notification("n-1", body="second", at=T0 + MINUTE), notification("n-2"))

        assert await store.find(order_id="o-1") == [notification("n-1", body="first"), notification("n-2")]

    async def test_a_notice_about_a_product_has_no_order_and_is_found_by_its_recipient(
        self, store: NotificationStore
    ) -> None:
        back = notification("n-back", order_id=None, body="Longjing 到货了")

        await self.save(store, back, notification("n-order"))

        assert await store.find(recipient="c-1") == [back, notification("n-order")]
        assert ids(await store.find(order_id="o-1")) == ["n-order"]

    async def test_existing_names_the_recorded_ids_among_those_asked(self, store: NotificationStore) -> None:
        await self.save(store, notification("n-1"), notification("n-2"))

        assert await store.existing(["n-1", "n-2", "n-unknown"]) == {"n-1", "n-2"}
        assert await store.existing(iter(["n-2", "n-2"])) == {"n-2"}
        assert await store.existing([]) == set()

    async def test_find_filters_by_order_by_recipient_or_by_both(self, store: NotificationStore) -> None:
        await self.save(
            store,
            notification("a", order_id="o-1", recipient="c-1"),
            notification("b", order_id="o-1", recipient="m-1"),
            notification("c", order_id="o-2", recipient="c-1"),
            notification("d", order_id="o-2", recipient="m-2"),
        )

        assert ids(await store.find(order_id="o-1")) == ["a", "b"]
        assert ids(await store.find(recipient="c-1")) == ["a", "c"]
        assert ids(await store.find(order_id="o-2", recipient="c-1")) == ["c"]
        assert ids(await store.find(order_id="o-1", recipient="m-2")) == []
        assert await store.find(order_id="o-unknown") == []

    async def test_find_lists_by_time_then_in_the_order_recorded_up_to_the_limit(
        self, store: NotificationStore
    ) -> None:
        await self.save(
            store, notification("late", at=T0 + MINUTE), notification("first", at=T0), notification("second")
        )
        await self.save(store, notification("third"), notification("earliest", at=T0 - MINUTE))

        assert ids(await store.find(order_id="o-1")) == ["earliest", "first", "second", "third", "late"]
        assert ids(await store.find(recipient="c-1", limit=3)) == ["earliest", "first", "second"]

    async def test_an_event_is_applied_once_per_consumer(self, store: NotificationStore) -> None:
        cause, other = cancelled("o-1"), cancelled("o-2")
        redelivered = replace(cause, offset=cause.offset + 100)
        assert await store.unapplied(CONSUMER, [cause, redelivered, other]) == [cause, other]
        async with store.transaction(CONSUMER) as tx:
            tx.mark_applied([cause.envelope.id])

        assert await store.unapplied(CONSUMER, [cause, other]) == [other]
        assert await store.unapplied("another-consumer", [cause]) == [cause]
        with pytest.raises(ConcurrentWrite):
            async with store.transaction(CONSUMER) as tx:
                await tx.save([notification("n-1")])
                tx.mark_applied([cause.envelope.id])
        assert await store.existing(["n-1"]) == set()

    async def test_a_transaction_whose_body_raises_writes_nothing(self, store: NotificationStore) -> None:
        note, cause = notification("n-1"), cancelled()

        with pytest.raises(RuntimeError, match="the handler failed"):
            async with store.transaction(CONSUMER) as tx:
                await tx.save([note])
                tx.mark_applied([cause.envelope.id])
                tx.emit([sent(note)])
                raise RuntimeError("the handler failed")

        assert await store.existing(["n-1"]) == set()
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await self.outbox_ids(store) == []

    async def test_emitted_events_are_in_the_outbox_in_the_order_emitted(
        self, store: NotificationStore
    ) -> None:
        notes = [notification("n-1"), notification("n-2", recipient="m-1")]
        envelopes = [sent(n) for n in notes]
        later = sent(notification("n-3", order_id="o-2"))

        async with store.transaction(CONSUMER) as tx:
            await tx.save(notes)
            tx.emit(envelopes)
        async with store.transaction(CONSUMER) as tx:
            tx.emit([later])

        assert await self.outbox_ids(store) == [e.id for e in [*envelopes, later]]


class TestInMemoryNotificationStore(NotificationStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryNotificationStore:
        return InMemoryNotificationStore()

    async def outbox_ids(self, store: NotificationStore) -> list[str]:
        assert isinstance(store, InMemoryNotificationStore)
        return [envelope.id for envelope in store.outbox]


class TestMongoNotificationStore(NotificationStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> MongoNotificationStore:
        store = MongoNotificationStore(mongo_store)
        await store.ensure_indexes()
        return store

    async def outbox_ids(self, store: NotificationStore) -> list[str]:
        assert isinstance(store, MongoNotificationStore)
        documents = store.base.db[OUTBOX].find().sort("_id", 1)
        return [decode(document["value"]).id async for document in documents]

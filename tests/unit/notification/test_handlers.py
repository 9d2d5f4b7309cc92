"""The consumer's use cases against the in-memory notification log."""

from __future__ import annotations

import pytest

from services.notification.channels import InboxChannel
from services.notification.domain import INBOX, MERCHANT_NEW_ORDER, Notification, Status
from services.notification.handlers import NotificationService, handle_batch
from shared.contracts import (
    NotificationSent,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    decode_data,
)
from shared.kafka import Delivery
from tests.twins.notification import InMemoryNotificationStore
from tests.unit.samples import ADDRESS, T0, delivery

pytestmark = pytest.mark.unit

LINES = [
    OrderLine(sku="TEA-1", name="Longjing tea", merchant_id="m-1", quantity=2, unit_price_fen=8800),
    OrderLine(sku="CUP-1", name="Celadon cup", merchant_id="m-2", quantity=1, unit_price_fen=4550),
]
CONFIRMED = OrderConfirmed(
    order_id="o-1",
    order_no="20261125-000001",
    customer_id="c-1",
    lines=LINES,
    total_fen=22150,
    payment_id="p",
)


class BrokenChannel:
    async def send(self, notification: Notification) -> None:
        raise ConnectionError(f"cannot reach {notification.recipient}")


def make_service(**channels: object) -> tuple[NotificationService, InMemoryNotificationStore]:
    store = InMemoryNotificationStore()
    service = NotificationService(
        store=store,
        channels={INBOX: InboxChannel(), **channels},  # type: ignore[dict-item]
        clock=lambda: T0,
    )
    return service, store


def sent_events(store: InMemoryNotificationStore) -> list[NotificationSent]:
    events = [decode_data(env) for env in store.outbox]
    assert all(isinstance(e, NotificationSent) for e in events)
    return events  # type: ignore[return-value]


async def test_order_confirmed_records_and_announces_one_notification_per_recipient() -> None:
    service, store = make_service()
    cause = delivery(CONFIRMED, correlation_id="corr-1")

    await handle_batch(service, [cause])

    stored = await store.find(order_id="o-1")
    assert sorted((n.role.value, n.recipient) for n in stored) == [
        ("customer", "c-1"),
        ("merchant", "m-1"),
        ("merchant", "m-2"),
    ]
    assert all(n.status is Status.SENT and n.attempts == 1 and n.at == T0 for n in stored)
    events = sent_events(store)
    assert {e.notification_id for e in events} == {n.notification_id for n in stored}
    assert all(e.status == "sent" and e.order_id == "o-1" for e in events)
    assert len({env.id for env in store.outbox}) == 3
    assert all(
        env.causation_id == cause.envelope.id and env.correlation_id == "corr-1" and env.subject == "o-1"
        for env in store.outbox
    )


async def test_a_redelivered_order_confirmed_notifies_once() -> None:
    service, store = make_service()
    first = delivery(CONFIRMED)
    redelivered = Delivery(first.envelope, first.event, "order.events", 0, 7)

    await handle_batch(service, [first, redelivered])
    await handle_batch(service, [redelivered])

    assert len(store.notifications) == 3
    assert len(store.outbox) == 3


async def test_a_replay_after_the_processed_record_expired_neither_resends_nor_reannounces() -> None:
    service, store = make_service()
    cause = delivery(CONFIRMED, correlation_id="corr-1")
    await handle_batch(service, [cause])
    store.ledger.processed.clear()

    await handle_batch(service, [cause])

    assert len(store.notifications) == 3
    assert len(store.outbox) == 3


async def test_a_failing_channel_records_the_failure_without_blocking_the_batch() -> None:
    service, store = make_service(inbox=BrokenChannel())
    rejected = OrderRejected(order_id="o-2", order_no="n-2", customer_id="c-2", reason="FRAUD")

    await handle_batch(service, [delivery(CONFIRMED), delivery(rejected, offset=1)])

    stored = list(store.notifications.values())
    assert len(stored) == 4
    assert all(n.status is Status.FAILED and n.attempts == 1 for n in stored)
    assert all("ConnectionError" in (n.error or "") for n in stored)
    assert [e.status for e in sent_events(store)] == ["failed"] * 4
    assert len(store.ledger.processed) == 2


async def test_an_unknown_channel_counts_as_a_failed_delivery() -> None:
    service, store = make_service()
    service.channels = {}

    await handle_batch(service, [delivery(CONFIRMED)])

    assert {n.status for n in store.notifications.values()} == {Status.FAILED}


async def test_other_order_events_are_passed_over_without_a_write() -> None:
    service, store = make_service()
    placed = OrderPlaced(
        order_id="o-1",
        order_no="n-1",
        customer_id="c-1",
        lines=LINES,
        total_fen=22150,
        payment_method=PaymentMethod.ALIPAY,
        shipping_address=ADDRESS,
        placed_at=T0,
    )
    cause = delivery(placed)

    await handle_batch(service, [cause])

    assert store.notifications == {} and store.outbox == []
    assert store.ledger.processed == set(), "an event that changes nothing is not recorded"


async def test_notifications_are_listed_by_recipient_across_orders() -> None:
    service, store = make_service()
    other = CONFIRMED.model_copy(update={"order_id": "o-9", "order_no": "n-9"})

    await handle_batch(service, [delivery(CONFIRMED), delivery(other, offset=1)])

    for_merchant = await store.find(recipient="m-1")
    assert sorted(n.order_id for n in for_merchant) == ["o-1", "o-9"]
    assert {n.template for n in for_merchant} == {MERCHANT_NEW_ORDER}

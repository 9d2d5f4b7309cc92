"""The consumer's use cases against the in-memory notification log."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from services.notification.channels import InboxChannel
from services.notification.domain import (
    CUSTOMER_LATE_PAYMENT_RETURNED,
    CUSTOMER_REFUND_COMPLETED,
    INBOX,
    MERCHANT_NEW_ORDER,
    Notification,
    Status,
)
from services.notification.handlers import NotificationService, handle_batch
from shared.contracts import (
    BackInStock,
    LowStock,
    NotificationSent,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    PaymentRefunded,
    PaymentVoided,
    RefundReason,
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
    assert sorted(str(n.order_id) for n in for_merchant) == ["o-1", "o-9"]
    assert {n.template for n in for_merchant} == {MERCHANT_NEW_ORDER}


LATE_VOID = PaymentVoided(
    order_id="o-5",
    payment_id="p-5",
    amount_fen=12800,
    reason=OrderEndReason.PAYMENT_TIMEOUT,
    customer_id="c-5",
    late=True,
)
REFUNDED = PaymentRefunded(
    order_id="o-5",
    payment_id="p-5",
    refund_id="r-5",
    customer_id="c-5",
    amount_fen=12800,
    refunded_total_fen=12800,
    captured_fen=12800,
    reason=RefundReason.REQUESTED,
)


@pytest.mark.parametrize(
    ("event", "template"),
    [
        (LATE_VOID, CUSTOMER_LATE_PAYMENT_RETURNED),
        (REFUNDED.model_copy(update={"reason": RefundReason.LATE_PAYMENT}), CUSTOMER_LATE_PAYMENT_RETURNED),
        (REFUNDED, CUSTOMER_REFUND_COMPLETED),
    ],
)
async def test_money_given_back_is_told_to_the_customer_and_announced(
    event: PaymentVoided | PaymentRefunded, template: str
) -> None:
    service, store = make_service()
    cause = delivery(event, correlation_id="corr-5")

    await handle_batch(service, [cause])

    [note] = await store.find(recipient="c-5")
    assert (note.order_id, note.template, note.status) == ("o-5", template, Status.SENT)
    assert "¥128.00" in note.body
    [sent] = sent_events(store)
    assert (sent.notification_id, sent.template, sent.recipient) == (note.notification_id, template, "c-5")
    assert store.outbox[0].causation_id == cause.envelope.id
    assert store.ledger.processed == {f"notification:{cause.envelope.id}"}


async def test_a_redelivered_or_reannounced_refund_tells_the_customer_once() -> None:
    service, store = make_service()
    first = delivery(REFUNDED)
    redelivered = Delivery(first.envelope, first.event, "payment.events", 0, 7)
    # The same refund in an event with a new id (an outbox relayed twice over a rewrite).
    reannounced = delivery(REFUNDED)

    await handle_batch(service, [first, redelivered])
    await handle_batch(service, [reannounced])

    assert len(store.notifications) == 1
    assert len(store.outbox) == 1


async def test_a_late_void_without_a_customer_is_skipped_with_a_log_line() -> None:
    service, store = make_service()
    old_record = LATE_VOID.model_copy(update={"customer_id": None})

    with capture_logs() as logs:
        await handle_batch(service, [delivery(old_record)])

    assert store.notifications == {} and store.outbox == []
    [line] = [entry for entry in logs if entry["event"] == "late_payment_not_told"]
    assert (line["order_id"], line["payment_id"]) == ("o-5", "p-5")


async def test_an_ordinary_void_tells_no_one_and_writes_nothing() -> None:
    service, store = make_service()

    await handle_batch(service, [delivery(LATE_VOID.model_copy(update={"late": False}))])

    assert store.notifications == {} and store.outbox == []
    assert store.ledger.processed == set(), "an event that changes nothing is not recorded"


async def test_payment_events_and_order_events_in_one_batch_are_all_told() -> None:
    service, store = make_service()

    await handle_batch(
        service, [delivery(CONFIRMED), delivery(LATE_VOID, offset=1), delivery(REFUNDED, offset=2)]
    )

    assert len(store.notifications) == 5  # two merchants and the customer of o-1; c-5 twice
    assert len(await store.find(recipient="c-5")) == 2


async def test_back_in_stock_and_low_stock_are_recorded_once_and_listed_to_their_recipients() -> None:
    service, store = make_service()
    back = delivery(
        BackInStock(sku="TEA", name="Longjing", merchant_id="m-1", available=5, customer_ids=["c-1", "c-2"])
    )
    low = delivery(LowStock(sku="TEA", name="Longjing", merchant_id="m-1", available=2, threshold=3))

    await handle_batch(service, [back, low])
    store.ledger.processed.clear()  # a replay after the processed record expired
    await handle_batch(service, [back, low])

    assert [(n.recipient, n.template) for n in store.notifications.values()] == [
        ("c-1", "customer.back_in_stock"),
        ("c-2", "customer.back_in_stock"),
        ("m-1", "merchant.low_stock"),
    ]
    assert [n.recipient for n in await store.find(recipient="c-2")] == ["c-2"]
    # NotificationSent is an order's event: product notices are recorded, not announced.
    assert store.outbox == []

"""Use cases of the notification service: turn order and payment events into delivered, recorded
notifications."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.notification import domain
from services.notification.channels import Channel
from services.notification.domain import Notification
from services.notification.store import NotificationStore
from shared.clock import Clock, utc_now
from shared.contracts import (
    BackInStock,
    CodesAssigned,
    Envelope,
    LowStock,
    NotificationSent,
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
    PaymentRefunded,
    PaymentVoided,
)
from shared.handlers import Handlers
from shared.kafka import Delivery, new_envelope
from shared.logging import get_logger

SERVICE = "notification"
log = get_logger(__name__)


@dataclass
class NotificationService:
    store: NotificationStore
    channels: Mapping[str, Channel]
    clock: Clock = utc_now


@dataclass
class Batch:
    """The notifications a consumed batch decides, each with the event that caused it."""

    now: datetime
    decided: list[tuple[Notification, Envelope]] = field(default_factory=list)

    def decide(self, cause: Envelope, notifications: Iterable[Notification]) -> None:
        self.decided.extend((notification, cause) for notification in notifications)


def on_order_confirmed(batch: Batch, event: OrderConfirmed, cause: Envelope) -> None:
    """Tell every merchant of the order about their lines, and the customer that it is confirmed."""
    batch.decide(cause, domain.order_confirmed(event, cause_id=cause.id, at=batch.now))


def on_order_rejected(batch: Batch, event: OrderRejected, cause: Envelope) -> None:
    """Tell the customer the order was not accepted, with the reason."""
    batch.decide(cause, domain.order_rejected(event, cause_id=cause.id, at=batch.now))


def on_order_cancelled(batch: Batch, event: OrderCancelled, cause: Envelope) -> None:
    """Tell the customer the order was cancelled, with the reason."""
    batch.decide(cause, domain.order_cancelled(event, cause_id=cause.id, at=batch.now))


def on_payment_voided(batch: Batch, event: PaymentVoided, cause: Envelope) -> None:
    """Tell the customer that a payment which arrived after the order ended was released."""
    if event.late and event.customer_id is None:
        log.info(
            "late_payment_not_told",
            order_id=event.order_id,
            payment_id=event.payment_id,
            why="the void does not say whose payment it was (recorded before v1.1)",
        )
    batch.decide(cause, domain.late_payment_voided(event, cause_id=cause.id, at=batch.now))


def on_payment_refunded(batch: Batch, event: PaymentRefunded, cause: Envelope) -> None:
    """Tell the customer their money went back: a late payment returned, or a refund completed."""
    batch.decide(cause, domain.payment_refunded(event, cause_id=cause.id, at=batch.now))


def on_codes_assigned(batch: Batch, event: CodesAssigned, cause: Envelope) -> None:
    """Give the buyer the codes of their paid order's virtual lines."""
    batch.decide(cause, domain.codes_delivered(event, cause_id=cause.id, at=batch.now))


def on_back_in_stock(batch: Batch, event: BackInStock, cause: Envelope) -> None:
    """Tell each customer the event names that the product they waited for is back."""
    batch.decide(cause, domain.back_in_stock(event, cause_id=cause.id, at=batch.now))


def on_low_stock(batch: Batch, event: LowStock, cause: Envelope) -> None:
    """Tell the merchant a product's sellable stock fell to or below its threshold."""
    batch.decide(cause, domain.low_stock(event, cause_id=cause.id, at=batch.now))


async def deliver(channels: Mapping[str, Channel], notification: Notification, clock: Clock) -> None:
    """Send through the notification's channel; a failure is recorded on it, not raised or retried.

    The failed notification is stored and announced with status `failed`, and nothing sends it again."""
    channel = channels.get(notification.channel)
    try:
        if channel is None:
            raise LookupError(f"no channel {notification.channel!r}")
        await channel.send(notification)
    except Exception as error:  # noqa: BLE001 - one recipient's failure must not hold back the batch
        notification.failed(clock(), f"{type(error).__name__}: {error}")
        log.warning(
            "notification_failed",
            notification_id=notification.notification_id,
            channel=notification.channel,
            error=notification.error,
        )
    else:
        notification.delivered(clock())


def sent_envelope(notification: Notification, cause: Envelope) -> Envelope:
    # One cause yields several NotificationSent, so the id comes from the notification, not the cause.
    if notification.order_id is None:
        raise ValueError("NotificationSent is keyed by order: a notice about a product is not announced")
    event = NotificationSent(
        order_id=notification.order_id,
        notification_id=notification.notification_id,
        recipient=notification.recipient,
        role=notification.role,
        channel=notification.channel,
        template=notification.template,
        status=notification.status.value,
    )
    return new_envelope(
        event,
        source=SERVICE,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        event_id=str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{NotificationSent.TYPE}/{notification.notification_id}")
        ),
    )


async def handle_batch(service: NotificationService, deliveries: Sequence[Delivery]) -> None:
    """Decide, deliver and record a consumed batch's notifications in one transaction."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    batch = Batch(now=service.clock())
    HANDLERS.dispatch(batch, fresh)
    if not batch.decided:
        return  # nothing to tell anyone (a void of a cancelled order's authorization): nothing to record
    # A cause replayed after its processed-id record expired must not reach anyone a second time.
    recorded = await service.store.existing(n.notification_id for n, _ in batch.decided)
    todo = [(n, cause) for n, cause in batch.decided if n.notification_id not in recorded]
    await asyncio.gather(*(deliver(service.channels, n, service.clock) for n, _ in todo))
    async with service.store.transaction(SERVICE) as tx:
        await tx.save([n for n, _ in todo])
        tx.mark_applied([d.envelope.id for d in fresh])
        # NotificationSent is an order's event: notices about a product (back in stock, low stock)
        # are recorded and listed, not announced.
        tx.emit([sent_envelope(n, cause) for n, cause in todo if n.order_id is not None])


HANDLERS = (
    Handlers[Batch]()
    .on(OrderConfirmed, on_order_confirmed)
    .on(OrderRejected, on_order_rejected)
    .on(OrderCancelled, on_order_cancelled)
    .on(PaymentVoided, on_payment_voided)
    .on(PaymentRefunded, on_payment_refunded)
    .on(CodesAssigned, on_codes_assigned)
    .on(BackInStock, on_back_in_stock)
    .on(LowStock, on_low_stock)
)

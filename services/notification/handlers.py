"""Use cases of the notification service: turn order events into delivered, recorded notifications."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notification import domain
from services.notification.channels import Channel
from services.notification.domain import Notification
from services.notification.store import NotificationStore
from shared.clock import Clock, utc_now
from shared.contracts import (
    Envelope,
    Event,
    NotificationSent,
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
)
from shared.kafka import Delivery, new_envelope
from shared.logging import get_logger

SERVICE = "notification"
log = get_logger(__name__)


@dataclass
class NotificationService:
    store: NotificationStore
    channels: Mapping[str, Channel]
    clock: Clock = utc_now


def on_order_confirmed(event: OrderConfirmed, cause: Envelope, now: datetime) -> list[Notification]:
    """Tell every merchant of the order about their lines, and the customer that it is confirmed."""
    return domain.order_confirmed(event, cause_id=cause.id, at=now)


def on_order_rejected(event: OrderRejected, cause: Envelope, now: datetime) -> list[Notification]:
    """Tell the customer the order was not accepted, with the reason."""
    return domain.order_rejected(event, cause_id=cause.id, at=now)


def on_order_cancelled(event: OrderCancelled, cause: Envelope, now: datetime) -> list[Notification]:
    """Tell the customer the order was cancelled, with the reason."""
    return domain.order_cancelled(event, cause_id=cause.id, at=now)


async def deliver(channels: Mapping[str, Channel], notification: Notification, clock: Clock) -> None:
    """Send through the notification's channel; a failure is recorded on it, never raised."""
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
    fresh = await service.store.unapplied(SERVICE, deliveries)
    if not fresh:
        return
    now = service.clock()
    decided: list[tuple[Notification, Envelope]] = []
    for delivery in fresh:
        handler = HANDLERS.get(type(delivery.event))
        if handler is not None:
            decided.extend((n, delivery.envelope) for n in handler(delivery.event, delivery.envelope, now))
    # A cause replayed after its processed-id record expired must not reach anyone a second time.
    recorded = await service.store.existing(n.notification_id for n, _ in decided)
    todo = [(n, cause) for n, cause in decided if n.notification_id not in recorded]
    await asyncio.gather(*(deliver(service.channels, n, service.clock) for n, _ in todo))
    async with service.store.transaction(SERVICE) as tx:
        await tx.save([n for n, _ in todo])
        tx.mark_applied([d.envelope.id for d in fresh])
        tx.emit([sent_envelope(n, cause) for n, cause in todo])


# Each handler takes the event type it is registered under; order events not listed are ignored.
Handler = Callable[[Any, Envelope, datetime], list[Notification]]

HANDLERS: dict[type[Event], Handler] = {
    OrderConfirmed: on_order_confirmed,
    OrderRejected: on_order_rejected,
    OrderCancelled: on_order_cancelled,
}

"""Events the notification service owns (topic `notification.events`, key = order id)."""

from __future__ import annotations

from enum import StrEnum

from shared.contracts.base import OrderEvent, register
from shared.contracts.topics import NOTIFICATION_EVENTS


class Role(StrEnum):
    MERCHANT = "merchant"
    CUSTOMER = "customer"


@register
class NotificationSent(OrderEvent):
    """One notification was delivered (status `sent`) or its one delivery attempt failed (status `failed`)."""

    TOPIC = NOTIFICATION_EVENTS
    TYPE = "notification.sent"
    notification_id: str
    recipient: str
    role: Role
    channel: str
    template: str
    status: str

"""The notification log over HTTP: what was sent about an order, or to a recipient."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.notification.domain import Notification
from services.notification.handlers import NotificationService
from shared.http import Problem

IDENTIFIER = r"^[A-Za-z0-9_.:\-]+$"
Identifier = Annotated[str | None, Query(min_length=1, max_length=64, pattern=IDENTIFIER)]


class NotificationOut(BaseModel):
    notification_id: str
    order_id: str
    recipient: str
    role: str
    channel: str
    template: str
    status: str
    at: datetime
    attempts: int
    subject: str
    body: str


class NotificationList(BaseModel):
    items: list[NotificationOut]


def notification_out(notification: Notification) -> NotificationOut:
    return NotificationOut(
        notification_id=notification.notification_id,
        order_id=notification.order_id,
        recipient=notification.recipient,
        role=notification.role.value,
        channel=notification.channel,
        template=notification.template,
        status=notification.status.value,
        at=notification.at,
        attempts=notification.attempts,
        subject=notification.subject,
        body=notification.body,
    )


def build_router(service: NotificationService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/notifications", response_model=NotificationList)
    async def list_notifications(
        order_id: Identifier = None,
        recipient: Identifier = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> NotificationList:
        """Notifications about an order and/or to a recipient, oldest first."""
        if order_id is None and recipient is None:
            raise Problem(
                422,
                "Invalid request",
                "give order_id or recipient to choose which notifications to list",
                code="invalid-request",
            )
        found = await service.store.find(order_id=order_id, recipient=recipient, limit=limit)
        return NotificationList(items=[notification_out(n) for n in found])

    return router

"""The notification log over HTTP: what was sent about an order, or to a recipient.

A recipient reads their own notifications (a customer those addressed to them, a merchant those to
their merchant id, a guest token its order's customer notices); admin reads everything. A filter that
names someone else narrows a caller's view to nothing; it never widens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from services.notification.domain import Notification
from services.notification.handlers import NotificationService
from shared.auth import Caller, Principal, Role
from shared.contracts import Role as RecipientRole
from shared.crypto import PersonalData
from shared.http import Problem, problem_responses

IDENTIFIER = r"^[A-Za-z0-9_.:\-]+$"
Identifier = Annotated[str | None, Query(min_length=1, max_length=64, pattern=IDENTIFIER)]

_EXAMPLE_NOTIFICATION: JsonDict = {
    "notification_id": "0b6c2d4e-8f1a-5b3c-9d7e-1f2a3b4c5d6e",
    "order_id": "ord_7d2f4b1c",
    "recipient": "cust-1",
    "role": "customer",
    "channel": "inbox",
    "template": "customer.order_confirmed",
    "status": "sent",
    "at": "2026-11-25T12:00:03Z",
    "attempts": 1,
    "subject": "订单 N20261125-0001 已确认",
    "body": "您的订单 N20261125-0001 已支付成功，实付 ¥128.00。商家正在为您准备商品。",
}


class NotificationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_NOTIFICATION]})

    notification_id: str
    order_id: str | None = Field(description="The order it is about; null for a notice about a product.")
    recipient: str = Field(description="The customer id or merchant id the notification is addressed to.")
    role: str = Field(description="customer or merchant: which kind of id `recipient` is.")
    channel: str
    template: str
    status: str = Field(description="pending, sent or failed")
    at: datetime = Field(description="When it was decided, or when its last send was made.")
    attempts: int
    subject: str
    body: str
    codes: list[str] | None = Field(
        default=None,
        description="A virtual product's codes (template customer.codes_delivered), for the recipient "
        "only; null for anyone else and for notifications that carry none.",
    )


class NotificationList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_EXAMPLE_NOTIFICATION]}]})

    items: list[NotificationOut]


def notification_out(notification: Notification, codes: list[str] | None = None) -> NotificationOut:
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
        codes=codes,
    )


def is_recipient(caller: Principal, notification: Notification) -> bool:
    """The customer it is addressed to, or the guest of its order: not admin, who reads everyone's."""
    if notification.role is not RecipientRole.CUSTOMER:
        return False
    if caller.role is Role.CUSTOMER:
        return notification.recipient == caller.subject
    return caller.role is Role.GUEST and notification.order_id == caller.order_id


def opened_codes(
    caller: Principal, notification: Notification, personal: PersonalData | None
) -> list[str] | None:
    if personal is None or not notification.sealed_codes or not is_recipient(caller, notification):
        return None
    return [personal.open(code) for code in notification.sealed_codes]


@dataclass(frozen=True)
class Audience:
    """Which notifications a caller may read; a field left None does not restrict."""

    recipient: str | None = None
    order_id: str | None = None
    role: RecipientRole | None = None

    def overlaps(self, *, order_id: str | None, recipient: str | None) -> bool:
        """Whether a query with these filters can match anything this audience may read."""
        return _compatible(order_id, self.order_id) and _compatible(recipient, self.recipient)

    def admits(self, notification: Notification) -> bool:
        return (
            _compatible(notification.recipient, self.recipient)
            and (self.order_id is None or notification.order_id == self.order_id)
            and (self.role is None or notification.role is self.role)
        )


def _compatible(value: str | None, allowed: str | None) -> bool:
    return value is None or allowed is None or value == allowed


EVERYTHING = Audience()


def audience_of(caller: Principal) -> Audience | None:
    """The notifications addressed to the caller (all of them for admin); None when there are none."""
    if caller.is_admin:
        return EVERYTHING
    if caller.role is Role.CUSTOMER:
        return Audience(recipient=caller.subject, role=RecipientRole.CUSTOMER)
    if caller.role is Role.MERCHANT and caller.merchant_id is not None:
        return Audience(recipient=caller.merchant_id, role=RecipientRole.MERCHANT)
    if caller.role is Role.GUEST and caller.order_id is not None:
        # A guest is the customer of its one order; its merchants' notices are not addressed to it.
        return Audience(order_id=caller.order_id, role=RecipientRole.CUSTOMER)
    return None


def build_router(service: NotificationService, *, personal: PersonalData | None = None) -> APIRouter:
    """`personal` opens the codes a notification carries for its recipient; without it they stay
    hidden."""
    router = APIRouter(prefix="/v1", tags=["notifications"])

    @router.get("/notifications", response_model=NotificationList, responses=problem_responses(401, 422))
    async def list_notifications(
        caller: Caller,
        order_id: Identifier = None,
        recipient: Identifier = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> NotificationList:
        """Notifications about an order and/or to a recipient, oldest first.

        A customer, merchant or guest gets their own notifications (the filters narrow them further)
        and may leave both filters out; admin gets anyone's and must give order_id or recipient."""
        audience = audience_of(caller)
        if caller.is_admin and order_id is None and recipient is None:
            raise Problem(
                422,
                "Invalid request",
                "give order_id or recipient to choose which notifications to list",
                code="invalid-request",
            )
        if audience is None or not audience.overlaps(order_id=order_id, recipient=recipient):
            return NotificationList(items=[])
        found = await service.store.find(
            order_id=order_id or audience.order_id, recipient=recipient or audience.recipient, limit=limit
        )
        return NotificationList(
            items=[
                notification_out(n, opened_codes(caller, n, personal)) for n in found if audience.admits(n)
            ]
        )

    return router

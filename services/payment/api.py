"""Read-only payment API: find an order's payment or look one up by id (tokens are never stored).

Admin reads every payment; a customer reads the payments of their own orders and a guest token the
payment of its one order. Anyone else's payment is answered as if it did not exist (404), so payment
ids cannot be probed. Merchants are refused (403): payment details are not theirs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from services.payment.domain import Payment
from services.payment.store import PaymentStore
from shared.auth import Principal, Role, require_role
from shared.http import Problem, problem_responses

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
OrderId = Annotated[
    str,
    Query(min_length=1, max_length=64, pattern=ID_PATTERN, description="The order whose payment to show."),
]
PaymentId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
PaymentReader = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.CUSTOMER, Role.GUEST))]

_EXAMPLE_TIMELINE: JsonDict = {"status": "authorized", "at": "2026-11-25T12:00:02Z", "note": ""}
_EXAMPLE_PAYMENT: JsonDict = {
    "payment_id": "pay_6f1c0d5e9a8b4c3d2e1f0a9b8c7d6e5f",
    "order_id": "ord_7d2f4b1c",
    "customer_id": "cust-1",
    "method": "alipay",
    "amount_fen": 12800,
    "currency": "CNY",
    "status": "authorized",
    "provider_ref": "sbx_alipay_0001",
    "reason": None,
    "detail": "",
    "created_at": "2026-11-25T12:00:02Z",
    "updated_at": "2026-11-25T12:00:02Z",
    "timeline": [_EXAMPLE_TIMELINE],
}


class TimelineOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_TIMELINE]})

    status: str = Field(description="authorized, failed or voided")
    at: datetime
    note: str = Field(description="Why the payment reached this status (a decline or end reason), or empty.")


class PaymentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_PAYMENT]})

    payment_id: str
    order_id: str
    customer_id: str
    method: str = Field(description="bank_card, wechat_pay or alipay")
    amount_fen: int = Field(description="The amount in minor units (fen).")
    currency: str
    status: str = Field(description="authorized, failed or voided")
    provider_ref: str | None = Field(description="The provider's reference of the authorization.")
    reason: str | None = Field(
        description="Why it failed (a decline code such as CARD_DECLINED) or was voided (why its order ended)"
    )
    detail: str = Field(description="The provider's own words about a decline, or empty.")
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineOut]


class PaymentList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_EXAMPLE_PAYMENT]}]})

    items: list[PaymentOut]


def payment_out(payment: Payment) -> PaymentOut:
    return PaymentOut(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        method=payment.method.value,
        amount_fen=payment.amount_fen,
        currency=payment.currency,
        status=payment.status.value,
        provider_ref=payment.provider_ref,
        reason=payment.reason,
        detail=payment.detail,
        created_at=payment.created_at,
        updated_at=payment.updated_at,
        timeline=[TimelineOut(status=e.status.value, at=e.at, note=e.note) for e in payment.timeline],
    )


def may_read(caller: Principal, payment: Payment) -> bool:
    """Admin reads every payment, a customer their own orders', a guest its one order's."""
    if caller.is_admin:
        return True
    if caller.role is Role.CUSTOMER:
        return payment.customer_id == caller.subject
    if caller.role is Role.GUEST:
        return payment.order_id == caller.order_id
    return False


def build_router(store: PaymentStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["payments"])

    @router.get("/payments", response_model=PaymentList, responses=problem_responses(401, 403, 422))
    async def list_payments(order_id: OrderId, caller: PaymentReader) -> PaymentList:
        """The payments of an order: a list of at most one, as every order has a single payment id.

        Empty when the order has no payment yet or is not the caller's."""
        found = await store.for_orders([order_id])
        return PaymentList(items=[payment_out(p) for p in found.values() if may_read(caller, p)])

    @router.get(
        "/payments/{payment_id}", response_model=PaymentOut, responses=problem_responses(401, 403, 404, 422)
    )
    async def get_payment(payment_id: PaymentId, caller: PaymentReader) -> PaymentOut:
        """One payment with its status, provider reference and timeline."""
        payment = await store.get(payment_id)
        if payment is None or not may_read(caller, payment):
            raise Problem(404, "Payment not found", f"no payment {payment_id}", code="payment-not-found")
        return payment_out(payment)

    return router

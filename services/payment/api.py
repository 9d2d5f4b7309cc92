"""Read-only payment API: find an order's payment or look one up by id (tokens are never stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.payment.domain import Payment
from services.payment.store import PaymentStore
from shared.http import Problem

Identifier = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class TimelineOut(BaseModel):
    status: str
    at: datetime
    note: str


class PaymentOut(BaseModel):
    payment_id: str
    order_id: str
    method: str
    amount_fen: int
    currency: str
    status: str
    provider_ref: str | None
    reason: str | None
    detail: str
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineOut]


class PaymentList(BaseModel):
    items: list[PaymentOut]


def payment_out(payment: Payment) -> PaymentOut:
    return PaymentOut(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
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


def build_router(store: PaymentStore) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/payments", response_model=PaymentList)
    async def list_payments(order_id: Identifier) -> PaymentList:
        """The payments of an order: a list of at most one, as every order has a single payment id."""
        found = await store.for_orders([order_id])
        return PaymentList(items=[payment_out(p) for p in found.values()])

    @router.get("/payments/{payment_id}", response_model=PaymentOut)
    async def get_payment(payment_id: str) -> PaymentOut:
        """One payment with its status, provider reference and timeline."""
        payment = await store.get(payment_id)
        if payment is None:
            raise Problem(404, "Payment not found", f"no payment {payment_id}", code="payment-not-found")
        return payment_out(payment)

    return router

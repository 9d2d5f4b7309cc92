"""The payment API: reads of payments, and the providers' callbacks.

Reads: admin reads every payment; a customer reads the payments of their own orders and a guest
token the payment of its one order. Anyone else's payment is answered as if it did not exist (404),
so payment ids cannot be probed. Merchants are refused (403): payment details are not theirs.
Provider tokens are never stored, so never shown.

Callbacks: `POST /v1/payments/callbacks/{method}` carries no bearer token; the provider's signature
is its authentication. A callback that does not verify, or that replays an accepted one, is 401 and
changes nothing; a good one is 200 once what it says is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from services.payment import metrics
from services.payment.domain import Payment, PaymentStatus
from services.payment.handlers import PaymentService, UnknownPayment, UnsupportedMethod, apply_callback
from services.payment.protocol import (
    BAD_SIGNATURE,
    MALFORMED_BODY,
    MISSING_HEADERS,
    STALE_TIMESTAMP,
    UNKNOWN_MERCHANT,
)
from services.payment.providers import InvalidCallback
from services.payment.store import CallbackReplayed, PaymentStore
from shared.auth import Principal, Role, require_role
from shared.contracts import PayActionType, PaymentMethod
from shared.http import PROBLEM_JSON, Problem, ProblemDetails, problem_responses
from shared.logging import get_logger

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
OrderId = Annotated[
    str,
    Query(min_length=1, max_length=64, pattern=ID_PATTERN, description="The order whose payment to show."),
]
PaymentId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
PaymentReader = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.CUSTOMER, Role.GUEST))]
log = get_logger(__name__)
# The metric label of each reason an adapter refuses a callback for (a bounded set, unlike messages).
_REFUSAL_LABELS = {
    BAD_SIGNATURE: "bad_signature",
    STALE_TIMESTAMP: "stale",
    MISSING_HEADERS: "missing_headers",
    UNKNOWN_MERCHANT: "unknown_merchant",
    MALFORMED_BODY: "malformed_body",
}

STATUSES = (
    "requested (the provider is being asked), pending (a wallet waits for the payer: see `action`), "
    "authorized (held), captured (taken), failed, voided (its order ended before the money was "
    "taken) or refunded (some or all of `captured_fen` went back: see `refunded_fen`)"
)
_EXAMPLE_TIMELINE: JsonDict = {"status": "captured", "at": "2026-11-25T12:00:41Z", "note": ""}
_EXAMPLE_PAYMENT: JsonDict = {
    "payment_id": "pay_6f1c0d5e9a8b4c3d2e1f0a9b8c7d6e5f",
    "order_id": "ord_7d2f4b1c",
    "customer_id": "cust-1",
    "method": "alipay",
    "amount_fen": 12800,
    "currency": "CNY",
    "status": "captured",
    "provider_ref": "sbx_alipay_0001",
    "reason": None,
    "detail": "",
    "captured_fen": 12800,
    "refunded_fen": 0,
    "action": None,
    "created_at": "2026-11-25T12:00:02Z",
    "updated_at": "2026-11-25T12:00:41Z",
    "timeline": [
        {"status": "requested", "at": "2026-11-25T12:00:02Z", "note": ""},
        {"status": "pending", "at": "2026-11-25T12:00:02Z", "note": ""},
        {"status": "authorized", "at": "2026-11-25T12:00:41Z", "note": ""},
        _EXAMPLE_TIMELINE,
    ],
}
_EXAMPLE_ACTION: JsonDict = {"type": "redirect", "url": "http://127.0.0.1:8009/pay/pay_6f1c0d5e9a8b4c3d"}


class TimelineOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_TIMELINE]})

    status: str = Field(description=f"The status reached: {STATUSES}.")
    at: datetime
    note: str = Field(
        description="Why the payment reached this status (a decline or end reason), or what happened "
        "at the provider (a release, a refund), or empty."
    )


class PayActionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_ACTION]})

    type: PayActionType = Field(
        description="qr: show `url` as a QR code for the payer's phone; redirect: send the payer's "
        "browser to it."
    )
    url: str


class PaymentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_PAYMENT]})

    payment_id: str
    order_id: str
    customer_id: str
    method: str = Field(description="bank_card, wechat_pay or alipay")
    amount_fen: int = Field(description="The amount in minor units (fen).")
    currency: str
    status: str = Field(description=STATUSES)
    provider_ref: str | None = Field(description="The provider's reference of the payment, once it has one.")
    reason: str | None = Field(
        description="Why it failed (a decline code such as CARD_DECLINED, PROVIDER_TIMEOUT, "
        "PAYER_DECLINED or AMOUNT_MISMATCH) or was voided (why its order ended)"
    )
    detail: str = Field(description="The provider's own words about a decline, or empty.")
    captured_fen: int = Field(description="What the provider took, in fen.")
    refunded_fen: int = Field(
        description="What went back to the payer so far, in fen (at most captured_fen)."
    )
    action: PayActionOut | None = Field(
        description="While a wallet payment is pending: what the payer must do on the provider's side."
    )
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
        captured_fen=payment.captured_fen,
        refunded_fen=payment.refunded_fen,
        action=None
        if payment.action is None or payment.status is not PaymentStatus.PENDING
        else PayActionOut(type=payment.action.type, url=payment.action.url),
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


class CallbackAck(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "applied"}]})

    status: Literal["applied", "duplicate"] = Field(
        description="applied: what the callback says is stored; duplicate: it said nothing new "
        "(a resend, or a state the payment has reached already)."
    )


def _callback_problems() -> dict[int | str, dict[str, Any]]:
    documented = problem_responses(404, 422)
    documented[401] = {
        "model": ProblemDetails,
        "description": "The callback is not the provider's, is stale, or replays one accepted before",
        "content": {
            PROBLEM_JSON: {
                "example": {
                    "type": "https://errors.order-platform.example/callback-refused",
                    "title": "Callback refused",
                    "status": 401,
                    "detail": "replayed",
                    "instance": "/v1/payments/callbacks/alipay",
                }
            }
        },
    }
    return documented


def build_callback_router(service: PaymentService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["provider callbacks"])

    @router.post("/payments/callbacks/{method}", response_model=CallbackAck, responses=_callback_problems())
    async def provider_callback(method: PaymentMethod, request: Request) -> CallbackAck:
        """A payment provider's signed notification that a payer paid or declined.

        No bearer token: the provider's signature over the raw body is the authentication. Answered
        200 only once what it says is stored; a resend is 200 and changes nothing."""
        try:
            provider = service.provider(method)
        except UnsupportedMethod:
            raise Problem(404, "Not found", f"no provider for {method.value}", code="not-found") from None
        body = await request.body()
        try:
            notice = provider.verify_callback(request.headers, body, service.clock())
        except InvalidCallback as error:
            raise _refused(method, _REFUSAL_LABELS.get(str(error), "invalid"), str(error)) from None
        try:
            decision = await apply_callback(service, method, notice)
        except CallbackReplayed:
            raise _refused(method, "replayed", "replayed") from None
        except UnknownPayment:
            raise Problem(
                404,
                "Payment not found",
                f"no {method.value} payment {notice.payment_id}",
                code="payment-not-found",
            ) from None
        return CallbackAck(status="applied" if decision.changed else "duplicate")

    return router


def _refused(method: PaymentMethod, reason: str, detail: str) -> Problem:
    # The body is never logged: it is the provider's, and a forged one is an attacker's.
    log.warning("callback_refused", method=method.value, reason=detail)
    metrics.CALLBACKS_REFUSED.labels(method.value, reason).inc()
    return Problem(401, "Callback refused", detail, code="callback-refused")

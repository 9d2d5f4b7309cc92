"""The sandbox's HTTP face: the provider API, the wallets' pay page, the ledger and the test hooks."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError

from sandbox.callbacks import SentCallback
from sandbox.provider import LedgerEntry, Payment, ProviderFault, Sandbox
from services.payment.protocol import (
    IDEMPOTENCY_KEY_HEADER,
    AuthorizeRequest,
    CaptureRequest,
    ErrorCode,
    PaymentAnswer,
    ProviderError,
    RefundRequest,
    VoidRequest,
    WireModel,
)
from services.payment.providers import Outcome
from shared.contracts import PaymentMethod
from shared.contracts.common import looks_like_card_number
from shared.http import Problem, create_app
from shared.logging import get_logger

log = get_logger(__name__)

W = TypeVar("W", bound=WireModel)

DESCRIPTION = (
    "The sandbox payment provider: WeChat Pay, Alipay and a card acquirer in one process, for dev and "
    "test only (it refuses ENVIRONMENT=prod). It speaks services/payment/protocol.py: signed requests "
    "under /v1/{method}/..., Idempotency-Key on money calls, signed callbacks to the notify_url. State "
    "is in memory: a restart forgets every payment, ledger entry and callback.\n\n"
    "Card tokens: tok_approve, tok_decline (CARD_DECLINED), tok_insufficient_funds (INSUFFICIENT_FUNDS), "
    "tok_timeout (never answers), tok_delay (authorized after SANDBOX_DELAY_S), tok_flaky (503 twice, "
    "then authorized); anything else is declined INVALID_TOKEN. Wallet payments wait for the payer on "
    "/pay/{provider_ref} or for the test hook POST /sandbox/payments/{payment_id}/decide."
)
PROVIDER_API = "provider API (signed)"
TEST_HOOKS = "test hooks (dev only)"
_MAX_CALLBACKS = 10


class Decision(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"


class DecideRequest(BaseModel):
    decision: Decision
    callbacks: int = Field(
        default=1, ge=0, le=_MAX_CALLBACKS, description="0 loses the notice; 2 duplicates it."
    )
    force: bool = Field(
        default=False,
        description="Pay even a closed payment: a payer who paid just before the close, whose notice "
        "comes late.",
    )


class NotifyRequest(BaseModel):
    times: int = Field(default=1, ge=1, le=_MAX_CALLBACKS)
    timestamp_offset_s: float = Field(
        default=0.0, description="Shifts the signed timestamp (-3600: an old notice)."
    )


class Delivery(BaseModel):
    status_code: int | None = Field(description="The receiver's answer; null when nothing answered.")


class NotifyAnswer(BaseModel):
    deliveries: list[Delivery]


class Ledger(BaseModel):
    entries: list[LedgerEntry]


def build_app(sandbox: Sandbox) -> FastAPI:
    app = create_app("sandbox", readiness={}, description=DESCRIPTION)
    app.title = "sandbox payment provider"

    @app.exception_handler(ProviderFault)
    async def _fault(_request: Request, fault: ProviderFault) -> JSONResponse:
        body = ProviderError(code=fault.code, message=fault.message)
        return JSONResponse(body.model_dump(), status_code=fault.status)

    app.include_router(_provider_api(sandbox))
    app.include_router(_pay_page(sandbox))
    app.include_router(_test_hooks(sandbox))
    return app


def _provider_api(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(tags=[PROVIDER_API])

    async def signed_body(request: Request, method: PaymentMethod) -> bytes:
        body = await request.body()
        sandbox.check_signature(method, request.headers, request.method, request.url.path, body)
        return body

    async def once(
        request: Request,
        method: PaymentMethod,
        call: WireModel,
        run: Callable[[str], Awaitable[PaymentAnswer]],
    ) -> PaymentAnswer:
        """A money call, run once per the request's Idempotency-Key."""
        return await sandbox.once(
            method, request.headers.get(IDEMPOTENCY_KEY_HEADER), request.url.path, call, run
        )

    @router.post("/v1/{method}/payments", summary="Authorize (Idempotency-Key: the payment id)")
    async def authorize(method: PaymentMethod, request: Request) -> PaymentAnswer:
        call = _parse(AuthorizeRequest, await signed_body(request, method))
        if call.token is not None and looks_like_card_number(call.token):
            log.warning("card_number_refused", method=method.value, payment_id=call.payment_id)
            raise ProviderFault(
                400, ErrorCode.CARD_NUMBER_REFUSED, "token: a card number; send a provider token"
            )
        return await once(request, method, call, lambda key: sandbox.authorize(method, call, key))

    @router.get("/v1/{method}/payments/{payment_id}", summary="Query a payment")
    async def query(method: PaymentMethod, payment_id: str, request: Request) -> PaymentAnswer:
        await signed_body(request, method)
        return await sandbox.query(method, payment_id)

    @router.post(
        "/v1/{method}/payments/{payment_id}/capture", summary="Capture (Idempotency-Key: `<id>:capture`)"
    )
    async def capture(method: PaymentMethod, payment_id: str, request: Request) -> PaymentAnswer:
        call = _parse(CaptureRequest, await signed_body(request, method))
        return await once(request, method, call, lambda key: sandbox.capture(method, payment_id, call, key))

    @router.post(
        "/v1/{method}/payments/{payment_id}/void", summary="Void or close (Idempotency-Key: `<id>:void`)"
    )
    async def void(method: PaymentMethod, payment_id: str, request: Request) -> PaymentAnswer:
        call = _parse(VoidRequest, await signed_body(request, method))
        return await once(request, method, call, lambda key: sandbox.void(method, payment_id, call, key))

    @router.post("/v1/{method}/refunds", summary="Refund (Idempotency-Key: the refund id)")
    async def refund(method: PaymentMethod, request: Request) -> PaymentAnswer:
        call = _parse(RefundRequest, await signed_body(request, method))
        return await once(request, method, call, lambda key: sandbox.refund(method, call, key))

    return router


def _parse(model: type[W], body: bytes) -> W:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        # Without the input: a token or a card number must not come back in an error.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise ProviderFault(400, ErrorCode.INVALID_REQUEST, problems) from None


def _pay_page(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(tags=["pay page"])

    @router.get("/pay/{provider_ref}", response_class=HTMLResponse, summary="The payer's page")
    async def page(provider_ref: str) -> HTMLResponse:
        payment = sandbox.payment_by_ref(provider_ref)
        if payment is None:
            return _html(404, "No such payment", "<p>This payment link is not known here.</p>")
        return _html(200, f"Pay with {_label(payment.method)}", _page_body(payment, sandbox))

    @router.post("/pay/{provider_ref}", response_class=HTMLResponse, summary="The payer pays or declines")
    async def decide(
        provider_ref: str,
        decision: Annotated[Decision, Form()],
        callbacks: Annotated[int, Form(ge=0, le=_MAX_CALLBACKS)] = 1,
    ) -> HTMLResponse:
        payment = sandbox.payment_by_ref(provider_ref)
        if payment is None:
            return _html(404, "No such payment", "<p>This payment link is not known here.</p>")
        try:
            sandbox.decide(payment, approve=decision is Decision.APPROVE, callbacks=callbacks)
        except ProviderFault as refused:
            return _html(refused.status, "Not possible", f"<p>{html.escape(refused.message)}.</p>")
        if decision is Decision.APPROVE:
            return _html(
                200, "Paid", f"<p>You paid {_yuan(payment.amount_fen)}. You may close this page.</p>"
            )
        return _html(200, "Declined", "<p>You declined the payment. You may close this page.</p>")

    return router


def _test_hooks(sandbox: Sandbox) -> APIRouter:
    router = APIRouter(tags=[TEST_HOOKS])

    @router.get("/ledger", summary="What the provider performed, once each")
    async def ledger(payment_id: Annotated[str | None, Query()] = None) -> Ledger:
        return Ledger(entries=sandbox.ledger(payment_id))

    @router.post("/sandbox/payments/{payment_id}/decide", summary="The payer's decision, as on the pay page")
    async def decide(payment_id: str, call: DecideRequest) -> PaymentAnswer:
        payment = _hooked(sandbox, payment_id)
        try:
            return sandbox.decide(
                payment, approve=call.decision is Decision.APPROVE, callbacks=call.callbacks, force=call.force
            )
        except ProviderFault as refused:
            raise _problem(refused) from None

    @router.post(
        "/sandbox/payments/{payment_id}/notify", summary="Send the payment's notice now, without retry"
    )
    async def notify(payment_id: str, call: NotifyRequest) -> NotifyAnswer:
        try:
            codes = await sandbox.notify_now(
                _hooked(sandbox, payment_id), call.times, call.timestamp_offset_s
            )
        except ProviderFault as refused:
            raise _problem(refused) from None
        return NotifyAnswer(deliveries=[Delivery(status_code=code) for code in codes])

    @router.get("/sandbox/callbacks", summary="Every callback delivery, byte for byte")
    async def callbacks(payment_id: Annotated[str | None, Query()] = None) -> list[SentCallback]:
        return [sent for sent in sandbox.notifier.sent if payment_id is None or sent.payment_id == payment_id]

    return router


def _hooked(sandbox: Sandbox, payment_id: str) -> Payment:
    try:
        return sandbox.payment(payment_id)
    except ProviderFault as refused:
        raise _problem(refused) from None


def _problem(fault: ProviderFault) -> Problem:
    return Problem(fault.status, "Not found" if fault.status == 404 else "Conflict", fault.message)


def _label(method: PaymentMethod) -> str:
    return {PaymentMethod.WECHAT_PAY: "WeChat Pay", PaymentMethod.ALIPAY: "Alipay"}.get(method, "a bank card")


def _yuan(amount_fen: int) -> str:
    return f"¥{amount_fen // 100}.{amount_fen % 100:02d}"


def _page_body(payment: Payment, sandbox: Sandbox) -> str:
    merchant = sandbox.settings.credentials(payment.method).merchant_id
    facts = (
        f"<p class=amount>{_yuan(payment.amount_fen)}</p>"
        f"<p>to <b>{html.escape(merchant)}</b> with {_label(payment.method)}</p>"
        f"<p>{html.escape(payment.description)}</p>"
    )
    if payment.status is not Outcome.PENDING:
        return facts + f"<p>This payment is {html.escape(payment.status)}: there is nothing to pay.</p>"
    return facts + (
        "<form method=post>"
        "<button name=decision value=approve>Pay</button> "
        "<button name=decision value=decline>Decline</button>"
        "<p><label>Notifications to send (sandbox): "
        f"<input type=number name=callbacks value=1 min=0 max={_MAX_CALLBACKS}></label></p>"
        "</form>"
    )


def _html(status: int, title: str, body: str) -> HTMLResponse:
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · sandbox</title>"
        "<style>body{font-family:sans-serif;max-width:28em;margin:2em auto}.amount{font-size:2em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(page, status_code=status)

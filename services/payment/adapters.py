"""HTTP adapters to the payment providers: one per method, speaking services/payment/protocol.py.

Each implements providers.PaymentProvider over an injected `httpx.AsyncClient`. What is worth retrying
(no answer within PROVIDER_CALL_TIMEOUT_S, a connection error, a 5xx, a 429, an unreadable answer)
raises ProviderUnavailable; a request the provider refuses as wrong (another 4xx: a bad signature,
a reused idempotency key, an operation the payment's state does not allow) raises ProviderRejected,
which retrying cannot fix; a decline is an answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from datetime import datetime
from typing import Self
from urllib.parse import urlsplit

import httpx
from pydantic import Field, ValidationError, model_validator

from services.payment.protocol import (
    DEV_CREDENTIALS,
    IDEMPOTENCY_KEY_HEADER,
    MALFORMED_BODY,
    SANDBOX_ENDPOINT,
    AuthorizeRequest,
    CallbackBody,
    CaptureRequest,
    ErrorCode,
    MerchantCredentials,
    PaymentAnswer,
    ProviderCredentials,
    ProviderError,
    RefundRequest,
    SignatureRejected,
    VoidRequest,
    WireModel,
    capture_path,
    new_nonce,
    payment_path,
    payments_path,
    refunds_path,
    request_headers,
    unix_seconds,
    verify_callback_signature,
    void_path,
)
from services.payment.providers import (
    CallbackNotice,
    InvalidCallback,
    Outcome,
    PayAction,
    PaymentProvider,
    ProviderAnswer,
    ProviderUnavailable,
)
from shared.clock import Clock, utc_now
from shared.contracts import PaymentMethod
from shared.contracts.common import looks_like_card_number
from shared.settings import SharedSettings

_LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain"})


class ProviderRejected(Exception):
    """The provider refused the request as wrong (a 4xx other than 429): our configuration or our
    request is at fault, so sending it again will not help."""

    def __init__(
        self, method: PaymentMethod, operation: str, status_code: int, code: str, message: str
    ) -> None:
        super().__init__(
            f"{method.value} {operation}: the provider refused it ({status_code} {code}): {message}"
        )
        self.method = method
        self.operation = operation
        self.status_code = status_code
        self.code = code


class LooksLikeCardNumber(ValueError):
    """A token that is a card number: card data must never leave for the provider."""


class ProviderSettings(SharedSettings, ProviderCredentials):
    """Where each method's provider is and how to talk to it; PaymentSettings extends it.

    `{METHOD}_ENDPOINT`, `{METHOD}_MERCHANT_ID`, `{METHOD}_API_KEY`, `{METHOD}_CALLBACK_KEY` for
    METHOD in WECHAT_PAY, ALIPAY, BANK_CARD: in dev every one defaults to the sandbox's."""

    wechat_pay_endpoint: str = SANDBOX_ENDPOINT
    alipay_endpoint: str = SANDBOX_ENDPOINT
    bank_card_endpoint: str = SANDBOX_ENDPOINT
    # One call's whole budget, connection included; a slower provider counts as unavailable.
    provider_call_timeout_s: float = Field(default=5.0, gt=0)
    # How far a callback's timestamp may be from our clock before it is refused as stale.
    provider_callback_max_skew_s: float = Field(default=300.0, gt=0)

    def endpoint(self, method: PaymentMethod) -> str:
        return str(getattr(self, f"{method.value}_endpoint"))

    @model_validator(mode="after")
    def _real_secrets_in_prod(self) -> Self:
        # Overrides SharedSettings' check of the same name (pydantic runs one validator per name),
        # so that one message names the secrets and the provider settings still to set.
        if self.is_dev:
            return self
        problems = []
        try:
            # mypy sees pydantic's decorator proxy; at run time this is the parent's plain method.
            super()._real_secrets_in_prod()  # type: ignore[operator]
        except ValueError as missing_secrets:
            problems.append(str(missing_secrets))
        endpoints = [
            f"{m.value}_endpoint".upper() for m in PaymentMethod if not _production_url(self.endpoint(m))
        ]
        if endpoints:
            problems.append(
                f"{', '.join(endpoints)} must be the provider's https URL (not the sandbox, not this host)"
            )
        merchants = [
            f"{m.value}_merchant_id".upper()
            for m in PaymentMethod
            if self.credentials(m).merchant_id.strip() in ("", DEV_CREDENTIALS[m].merchant_id)
        ]
        if merchants:
            problems.append(
                f"{', '.join(merchants)} must be the merchant ids the providers issued (not the sandbox's)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _production_url(url: str) -> bool:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host or host in _LOCAL_HOSTS or host.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return not (address.is_loopback or address.is_unspecified)


class HttpProvider:
    """One method's provider over HTTP. Wallets (WeChat Pay, Alipay) take the money when the payer
    pays; a card's authorization waits for capture."""

    method: PaymentMethod
    captures_on_authorize: bool

    def __init__(
        self,
        method: PaymentMethod,
        *,
        endpoint: str,
        credentials: MerchantCredentials,
        client: httpx.AsyncClient,
        call_timeout_s: float = 5.0,
        callback_max_skew_s: float = 300.0,
        clock: Clock = utc_now,
    ) -> None:
        self.method = method
        self.captures_on_authorize = method is not PaymentMethod.BANK_CARD
        self._endpoint = endpoint.rstrip("/")
        self._credentials = credentials
        self._client = client
        self._timeout_s = call_timeout_s
        self._max_skew_s = callback_max_skew_s
        self._clock = clock

    async def authorize(
        self,
        payment_id: str,
        amount_fen: int,
        currency: str,
        token: str | None,
        notify_url: str,
        description: str,
    ) -> ProviderAnswer:
        if token is not None and looks_like_card_number(token):
            raise LooksLikeCardNumber(
                f"{self.method.value} authorize: the token is a card number, which must never be sent"
            )
        request = AuthorizeRequest(
            payment_id=payment_id,
            amount_fen=amount_fen,
            currency=currency,
            token=token,
            notify_url=notify_url,
            description=description,
        )
        return await self._money_call("authorize", payments_path(self.method), request, payment_id)

    async def capture(self, payment_id: str, provider_ref: str, amount_fen: int) -> ProviderAnswer:
        request = CaptureRequest(provider_ref=provider_ref, amount_fen=amount_fen)
        path = capture_path(self.method, payment_id)
        return await self._money_call("capture", path, request, f"{payment_id}:capture")

    async def void(self, payment_id: str, provider_ref: str | None) -> ProviderAnswer:
        path = void_path(self.method, payment_id)
        return await self._money_call(
            "void", path, VoidRequest(provider_ref=provider_ref), f"{payment_id}:void"
        )

    async def refund(
        self, refund_id: str, payment_id: str, provider_ref: str, amount_fen: int
    ) -> ProviderAnswer:
        request = RefundRequest(
            refund_id=refund_id, payment_id=payment_id, provider_ref=provider_ref, amount_fen=amount_fen
        )
        return await self._money_call("refund", refunds_path(self.method), request, refund_id)

    async def query(self, payment_id: str) -> ProviderAnswer:
        response = await self._send("query", "GET", payment_path(self.method, payment_id), b"", {})
        # The provider's own "no such payment", not a 404 from a wrong endpoint path.
        if response.status_code == httpx.codes.NOT_FOUND and _error(response).code == ErrorCode.NOT_FOUND:
            return ProviderAnswer(outcome=Outcome.NOT_FOUND)
        return self._answer("query", response)

    def verify_callback(self, headers: Mapping[str, str], body: bytes, now: datetime) -> CallbackNotice:
        try:
            signed = verify_callback_signature(
                headers, self._credentials, body, now=now, max_skew_s=self._max_skew_s
            )
        except SignatureRejected as refused:
            raise InvalidCallback(refused.reason) from None
        try:
            notice = CallbackBody.model_validate_json(body)
        except ValidationError:
            raise InvalidCallback(MALFORMED_BODY) from None
        return CallbackNotice(
            notification_id=notice.notification_id,
            nonce=signed.nonce,
            sent_at=signed.sent_at,
            payment_id=notice.payment_id,
            provider_ref=notice.provider_ref,
            outcome=notice.outcome,
            amount_fen=notice.amount_fen,
            decline_code=notice.decline_code,
            message=notice.message,
        )

    async def _money_call(
        self, operation: str, path: str, request: WireModel, idempotency_key: str
    ) -> ProviderAnswer:
        body = request.model_dump_json().encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_KEY_HEADER: idempotency_key}
        return self._answer(operation, await self._send(operation, "POST", path, body, headers))

    async def _send(
        self, operation: str, http_method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        url = httpx.URL(self._endpoint + path)
        signed = request_headers(
            self._credentials,
            http_method,
            url.path,
            body,
            timestamp=unix_seconds(self._clock()),
            nonce=new_nonce(),
        )
        try:
            # httpx's timeout bounds each step (connect, each read); this bounds the whole call.
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.request(
                    http_method, url, content=body, headers={**headers, **signed}, timeout=self._timeout_s
                )
        except TimeoutError as error:
            raise ProviderUnavailable(
                f"{self.method.value} {operation}: no answer within {self._timeout_s:g} s"
            ) from error
        except httpx.TransportError as error:
            raise ProviderUnavailable(
                f"{self.method.value} {operation}: {type(error).__name__}: {error}"
            ) from error
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS or response.status_code >= 500:
            raise ProviderUnavailable(
                f"{self.method.value} {operation}: the provider answered {response.status_code}"
            )
        return response

    def _answer(self, operation: str, response: httpx.Response) -> ProviderAnswer:
        if not response.is_success:
            error = _error(response)
            raise ProviderRejected(self.method, operation, response.status_code, error.code, error.message)
        try:
            answer = PaymentAnswer.model_validate_json(response.content)
        except ValidationError as error:
            # Not the provider's answer (a proxy's page, a cut-off body): ask again later.
            raise ProviderUnavailable(f"{self.method.value} {operation}: an unreadable answer") from error
        return ProviderAnswer(
            outcome=answer.outcome,
            provider_ref=answer.provider_ref,
            action=PayAction(type=answer.action.type, url=answer.action.url) if answer.action else None,
            decline_code=answer.decline_code,
            message=answer.message,
            amount_fen=answer.amount_fen,
        )


def _error(response: httpx.Response) -> ProviderError:
    try:
        return ProviderError.model_validate_json(response.content)
    except ValidationError:
        return ProviderError(code=f"HTTP_{response.status_code}", message=response.reason_phrase)


def build_providers(
    settings: ProviderSettings, client: httpx.AsyncClient
) -> dict[PaymentMethod, PaymentProvider]:
    """One adapter per method, each at its configured endpoint with its merchant's credentials."""
    return {
        method: HttpProvider(
            method,
            endpoint=settings.endpoint(method),
            credentials=settings.credentials(method),
            client=client,
            call_timeout_s=settings.provider_call_timeout_s,
            callback_max_skew_s=settings.provider_callback_max_skew_s,
        )
        for method in PaymentMethod
    }

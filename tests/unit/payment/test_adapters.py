"""The HTTP adapters' side of the provider boundary: settings, signed calls, and what each answer means.

The sandbox's tests (tests/unit/sandbox) drive these adapters against the real sandbox; here a stub
transport plays the provider's failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from services.payment.adapters import (
    HttpProvider,
    LooksLikeCardNumber,
    ProviderRejected,
    ProviderSettings,
    build_providers,
)
from services.payment.protocol import (
    DEV_CREDENTIALS,
    IDEMPOTENCY_KEY_HEADER,
    MALFORMED_BODY,
    SANDBOX_ENDPOINT,
    UNKNOWN_MERCHANT,
    callback_headers,
    unix_seconds,
    verify_request,
)
from services.payment.providers import (
    InvalidCallback,
    Outcome,
    PayAction,
    ProviderAnswer,
    ProviderUnavailable,
)
from shared.contracts import PayActionType, PaymentMethod
from shared.settings import load_settings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ENDPOINT = "https://provider.test/api"
PROVIDER_VARIABLES = [
    f"{method.value}_{suffix}".upper()
    for method in PaymentMethod
    for suffix in ("endpoint", "merchant_id", "api_key", "callback_key")
]

Handler = Callable[[httpx.Request], httpx.Response]


def answered(status: int, body: object) -> Handler:
    return lambda _request: httpx.Response(status, json=body)


def adapter(
    handler: object, method: PaymentMethod = PaymentMethod.BANK_CARD, timeout_s: float = 1.0
) -> HttpProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return HttpProvider(
        method,
        endpoint=ENDPOINT + "/",
        credentials=DEV_CREDENTIALS[method],
        client=client,
        call_timeout_s=timeout_s,
        clock=lambda: NOW,
    )


def without_provider_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# --- settings ------------------------------------------------------------------------------------


def test_in_dev_every_method_points_at_the_sandbox_with_the_dev_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_provider_settings(monkeypatch)
    settings = ProviderSettings()

    for method in PaymentMethod:
        assert settings.endpoint(method) == SANDBOX_ENDPOINT
        assert settings.credentials(method) == DEV_CREDENTIALS[method]


def test_prod_with_nothing_set_refuses_to_start_naming_every_provider_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    without_provider_settings(monkeypatch)
    monkeypatch.setenv("ENVIRONMENT", "prod")

    with pytest.raises(SystemExit) as exited:
        load_settings(ProviderSettings)

    assert exited.value.code != 0
    message = capsys.readouterr().err
    for name in [*PROVIDER_VARIABLES, "MONGO_URL", "AUTH_SIGNING_KEY"]:
        assert name in message, f"{name} not named in: {message}"


def prod_refusal(**provider_settings: str) -> str:
    """The message of ProviderSettings with ENVIRONMENT=prod and real-looking provider settings
    (https hosts, issued merchant ids, non-default keys) overridden by `provider_settings`."""
    real = {}
    for method in PaymentMethod:
        real[f"{method.value}_endpoint"] = f"https://{method.value.replace('_', '-')}.provider.example.com/v3"
        real[f"{method.value}_merchant_id"] = f"1900{len(method.value)}0001"
        real[f"{method.value}_api_key"] = f"real {method.value} api key"
        real[f"{method.value}_callback_key"] = f"real {method.value} callback key"
    with pytest.raises(ValueError) as refused:
        ProviderSettings(environment="prod", **(real | provider_settings))  # type: ignore[arg-type]
    return str(refused.value)


def test_prod_with_real_provider_settings_names_none_of_them() -> None:
    message = prod_refusal()  # still refused: the platform's own secrets are unset here

    assert not [name for name in PROVIDER_VARIABLES if name in message], message


@pytest.mark.parametrize(
    "endpoint",
    [
        SANDBOX_ENDPOINT,
        "http://payments.provider.example.com",
        "https://localhost/pay",
        "https://api.localhost",
        "https://127.0.0.1:8443",
        "https://127.8.9.10",
        "https://[::1]/",
        "https://0.0.0.0",
        "not a url",
    ],
)
def test_prod_refuses_an_endpoint_that_is_not_a_remote_https_url(endpoint: str) -> None:
    message = prod_refusal(alipay_endpoint=endpoint)

    assert "ALIPAY_ENDPOINT" in message
    assert "WECHAT_PAY_ENDPOINT" not in message and "BANK_CARD_ENDPOINT" not in message


@pytest.mark.parametrize("merchant_id", [DEV_CREDENTIALS[PaymentMethod.BANK_CARD].merchant_id, " "])
def test_prod_refuses_the_sandbox_merchant_id_or_none(merchant_id: str) -> None:
    message = prod_refusal(bank_card_merchant_id=merchant_id)

    assert "BANK_CARD_MERCHANT_ID" in message and "ALIPAY_MERCHANT_ID" not in message


def test_prod_refuses_a_key_left_at_its_dev_default() -> None:
    message = prod_refusal(wechat_pay_callback_key=DEV_CREDENTIALS[PaymentMethod.WECHAT_PAY].callback_key)

    assert "WECHAT_PAY_CALLBACK_KEY" in message and "WECHAT_PAY_API_KEY" not in message


# --- calls ---------------------------------------------------------------------------------------


async def test_wallets_capture_when_the_payer_pays_and_cards_wait_for_capture() -> None:
    async with httpx.AsyncClient() as client:
        providers = build_providers(ProviderSettings(), client)

    assert set(providers) == set(PaymentMethod)
    assert {method: p.captures_on_authorize for method, p in providers.items()} == {
        PaymentMethod.BANK_CARD: False,
        PaymentMethod.WECHAT_PAY: True,
        PaymentMethod.ALIPAY: True,
    }
    assert all(provider.method is method for method, provider in providers.items())


async def test_every_money_call_is_signed_and_carries_its_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"payment_id": "pay-1", "outcome": "authorized", "provider_ref": "r-1"}
        )

    card = adapter(provider)
    await card.authorize("pay-1", 1234, "CNY", "tok_approve", "https://shop.test/notify", "order 1")
    await card.capture("pay-1", "r-1", 1234)
    await card.void("pay-1", "r-1")
    await card.refund("ref-1", "pay-1", "r-1", 234)
    await card.query("pay-1")

    assert [(r.method, r.url.path, r.headers.get(IDEMPOTENCY_KEY_HEADER)) for r in seen] == [
        ("POST", "/api/v1/bank_card/payments", "pay-1"),
        ("POST", "/api/v1/bank_card/payments/pay-1/capture", "pay-1:capture"),
        ("POST", "/api/v1/bank_card/payments/pay-1/void", "pay-1:void"),
        ("POST", "/api/v1/bank_card/refunds", "ref-1"),
        ("GET", "/api/v1/bank_card/payments/pay-1", None),
    ]
    for request in seen:
        verify_request(
            request.headers,
            DEV_CREDENTIALS[PaymentMethod.BANK_CARD],
            request.method,
            request.url.path,
            request.content,
            now=NOW,
        )
    assert len({r.headers["X-Provider-Nonce"] for r in seen}) == len(seen)
    assert json.loads(seen[0].content) == {
        "payment_id": "pay-1",
        "amount_fen": 1234,
        "currency": "CNY",
        "token": "tok_approve",
        "notify_url": "https://shop.test/notify",
        "description": "order 1",
    }


async def test_a_wallet_answer_carries_the_payers_action() -> None:
    wallet = adapter(
        answered(
            200,
            {
                "payment_id": "pay-1",
                "outcome": "pending",
                "provider_ref": "r-1",
                "action": {"type": "qr", "url": "https://pay.test/r-1"},
                "amount_fen": 500,
            },
        ),
        PaymentMethod.WECHAT_PAY,
    )

    answer = await wallet.authorize("pay-1", 500, "CNY", None, "https://shop.test/notify", "")

    assert answer == ProviderAnswer(
        outcome=Outcome.PENDING,
        provider_ref="r-1",
        action=PayAction(type=PayActionType.QR, url="https://pay.test/r-1"),
        amount_fen=500,
    )


async def test_a_decline_is_an_answer_with_the_providers_code() -> None:
    card = adapter(
        answered(
            200, {"payment_id": "p", "outcome": "declined", "decline_code": "CARD_DECLINED", "message": "no"}
        )
    )

    answer = await card.authorize("p", 100, "CNY", "tok_decline", "", "")

    assert (answer.outcome, answer.decline_code, answer.message) == (Outcome.DECLINED, "CARD_DECLINED", "no")


def raising(error: Exception) -> Handler:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise error

    return handler


async def never_answers(_request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "handler",
    [
        raising(httpx.ConnectError("refused")),
        raising(httpx.ReadTimeout("slow")),
        never_answers,
        answered(500, {"code": "INTERNAL"}),
        answered(503, {"code": "UNAVAILABLE"}),
        answered(429, {"code": "RATE_LIMITED"}),
        lambda _request: httpx.Response(200, text="<html>a proxy's error page</html>"),
    ],
    ids=["connection refused", "read timeout", "no answer at all", "500", "503", "429", "unreadable 200"],
)
async def test_what_is_worth_retrying_is_provider_unavailable(handler: object) -> None:
    card = adapter(handler, timeout_s=0.05)

    with pytest.raises(ProviderUnavailable, match="bank_card capture"):
        await card.capture("pay-1", "r-1", 100)


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "INVALID_REQUEST"), (401, "INVALID_SIGNATURE"), (409, "IDEMPOTENCY_KEY_REUSED")],
)
async def test_a_request_the_provider_refuses_as_wrong_is_rejected_not_retried(
    status: int, code: str
) -> None:
    card = adapter(answered(status, {"code": code, "message": "explained"}))

    with pytest.raises(ProviderRejected) as rejected:
        await card.refund("ref-1", "pay-1", "r-1", 100)

    assert not isinstance(rejected.value, ProviderUnavailable)
    assert (rejected.value.status_code, rejected.value.code, rejected.value.operation) == (
        status,
        code,
        "refund",
    )


async def test_query_of_a_payment_the_provider_never_saw_is_not_found() -> None:
    card = adapter(answered(404, {"code": "NOT_FOUND", "message": "no such payment"}))

    assert (await card.query("pay-1")).outcome is Outcome.NOT_FOUND


async def test_a_404_that_is_not_the_providers_answer_is_a_misconfiguration_not_a_missing_payment() -> None:
    card = adapter(lambda _request: httpx.Response(404, text="no route"))

    with pytest.raises(ProviderRejected, match="HTTP_404"):
        await card.query("pay-1")


@pytest.mark.parametrize("method", list(PaymentMethod))
@pytest.mark.parametrize("token", ["4111111111111111", "4111 1111 1111 1111", "6250-9410-0652-8599"])
async def test_a_card_number_as_token_is_refused_before_anything_is_sent(
    method: PaymentMethod, token: str
) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    provider = adapter(record, method)

    with pytest.raises(LooksLikeCardNumber) as refused:
        await provider.authorize("pay-1", 100, "CNY", token, "https://shop.test/notify", "")

    assert sent == []
    assert isinstance(refused.value, ValueError)
    assert token.replace(" ", "").replace("-", "")[:12] not in str(refused.value).replace(" ", "").replace(
        "-", ""
    )


def test_a_well_signed_callback_with_a_body_that_is_not_a_notice_is_malformed() -> None:
    card = adapter(answered(200, {}))
    body = b'{"payment_id": "pay-1"}'
    headers = callback_headers(
        DEV_CREDENTIALS[PaymentMethod.BANK_CARD], body, timestamp=unix_seconds(NOW), nonce="n"
    )

    with pytest.raises(InvalidCallback, match=MALFORMED_BODY):
        card.verify_callback(headers, body, NOW)


def test_a_callback_from_another_methods_merchant_is_unknown() -> None:
    card = adapter(answered(200, {}))
    body = b"{}"
    headers = callback_headers(
        DEV_CREDENTIALS[PaymentMethod.ALIPAY], body, timestamp=unix_seconds(NOW), nonce="n"
    )

    with pytest.raises(InvalidCallback, match=UNKNOWN_MERCHANT):
        card.verify_callback(headers, body, NOW)

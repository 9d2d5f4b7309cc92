"""The provider wire protocol: what a signature binds, when it is refused, and the shared bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.payment.protocol import (
    BAD_SIGNATURE,
    DEV_CREDENTIALS,
    MISSING_HEADERS,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    STALE_TIMESTAMP,
    TIMESTAMP_HEADER,
    UNKNOWN_MERCHANT,
    CallbackBody,
    MerchantCredentials,
    ProviderCredentials,
    SignatureRejected,
    callback_headers,
    capture_path,
    payment_path,
    request_headers,
    unix_seconds,
    verify_callback_signature,
    verify_request,
)
from services.payment.providers import Outcome
from shared.contracts import PaymentMethod

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CARD = DEV_CREDENTIALS[PaymentMethod.BANK_CARD]
BODY = b'{"payment_id":"pay-1","amount_fen":1234}'
PATH = "/v1/bank_card/payments"


def signed(body: bytes = BODY, *, at: datetime = NOW, nonce: str = "n-1") -> dict[str, str]:
    return request_headers(CARD, "POST", PATH, body, timestamp=unix_seconds(at), nonce=nonce)


def reason(**overrides: object) -> str:
    """Why verify_request refuses the default request with `overrides` applied."""
    arguments: dict[str, object] = {
        "headers": signed(),
        "credentials": CARD,
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "now": NOW,
    } | overrides
    with pytest.raises(SignatureRejected) as refused:
        verify_request(**arguments)  # type: ignore[arg-type]
    return refused.value.reason


def test_a_request_signed_with_the_api_key_verifies_and_says_who_sent_it_when() -> None:
    verified = verify_request(signed(), CARD, "POST", PATH, BODY, now=NOW)

    assert (verified.merchant_id, verified.nonce, verified.sent_at) == (CARD.merchant_id, "n-1", NOW)


def test_header_names_are_matched_whatever_their_case() -> None:
    lowered = {name.lower(): value for name, value in signed().items()}

    assert verify_request(lowered, CARD, "POST", PATH, BODY, now=NOW).nonce == "n-1"


@pytest.mark.parametrize(
    "tampered",
    [
        {"method": "PUT"},
        {"path": "/v1/bank_card/refunds"},
        {"body": BODY.replace(b"1234", b"9234")},
        {"headers": signed() | {TIMESTAMP_HEADER: str(unix_seconds(NOW) + 1)}},
        {"headers": signed() | {NONCE_HEADER: "n-2"}},
        {"headers": signed() | {SIGNATURE_HEADER: "0" * 64}},
        {"credentials": MerchantCredentials(CARD.merchant_id, api_key="another key", callback_key="x")},
    ],
    ids=["method", "path", "body", "timestamp", "nonce", "signature", "key"],
)
def test_changing_anything_the_signature_covers_breaks_it(tampered: dict[str, object]) -> None:
    assert reason(**tampered) == BAD_SIGNATURE


@pytest.mark.parametrize("offset_s", [-301, 301])
def test_a_signature_further_than_the_skew_from_our_clock_is_stale(offset_s: int) -> None:
    assert reason(headers=signed(at=NOW + timedelta(seconds=offset_s))) == STALE_TIMESTAMP


def test_a_signature_within_the_skew_is_fresh_and_the_skew_is_the_receivers_choice() -> None:
    old = signed(at=NOW - timedelta(seconds=299))

    assert verify_request(old, CARD, "POST", PATH, BODY, now=NOW).nonce == "n-1"
    assert reason(headers=old, max_skew_s=60) == STALE_TIMESTAMP


def test_another_merchant_is_unknown_even_with_a_good_signature() -> None:
    other = MerchantCredentials("someone-else", api_key=CARD.api_key, callback_key=CARD.callback_key)
    headers = request_headers(other, "POST", PATH, BODY, timestamp=unix_seconds(NOW), nonce="n-1")

    assert reason(headers=headers) == UNKNOWN_MERCHANT


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {k: v for k, v in signed().items() if k != SIGNATURE_HEADER},
        {k: v for k, v in signed().items() if k != NONCE_HEADER},
        signed() | {TIMESTAMP_HEADER: "soon"},
        signed() | {TIMESTAMP_HEADER: "-5"},
        signed() | {NONCE_HEADER: "n" * 65},
    ],
    ids=["none", "no signature", "no nonce", "word timestamp", "negative timestamp", "long nonce"],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    assert reason(headers=headers) == MISSING_HEADERS


def test_requests_and_callbacks_use_different_keys() -> None:
    as_callback = callback_headers(CARD, BODY, timestamp=unix_seconds(NOW), nonce="n-1")

    assert verify_callback_signature(as_callback, CARD, BODY, now=NOW).nonce == "n-1"
    with pytest.raises(SignatureRejected, match=BAD_SIGNATURE):
        verify_callback_signature(signed(), CARD, BODY, now=NOW)
    with pytest.raises(SignatureRejected, match=BAD_SIGNATURE):
        verify_request(as_callback, CARD, "POST", "/notify", BODY, now=NOW)


def test_every_method_has_its_own_dev_merchant_and_keys() -> None:
    credentials = list(DEV_CREDENTIALS.values())

    assert len({c.merchant_id for c in credentials}) == len(PaymentMethod)
    assert len({c.api_key for c in credentials} | {c.callback_key for c in credentials}) == 2 * len(
        PaymentMethod
    )


def test_credentials_keep_their_keys_out_of_their_repr() -> None:
    assert CARD.merchant_id in repr(CARD)
    assert CARD.api_key not in repr(CARD) and CARD.callback_key not in repr(CARD)


def test_credentials_settings_default_to_the_dev_credentials_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALIPAY_CALLBACK_KEY", "a real callback key")

    settings = ProviderCredentials()

    assert settings.credentials(PaymentMethod.WECHAT_PAY) == DEV_CREDENTIALS[PaymentMethod.WECHAT_PAY]
    assert settings.credentials(PaymentMethod.ALIPAY).callback_key == "a real callback key"


def test_a_payment_id_is_one_path_segment() -> None:
    assert payment_path(PaymentMethod.ALIPAY, "a/b c") == "/v1/alipay/payments/a%2Fb%20c"
    assert capture_path(PaymentMethod.BANK_CARD, "p-1") == "/v1/bank_card/payments/p-1/capture"


@pytest.mark.parametrize("outcome", [Outcome.PENDING, Outcome.VOIDED, Outcome.REFUNDED, Outcome.NOT_FOUND])
def test_a_notice_announces_only_an_authorization_a_capture_or_a_decline(outcome: Outcome) -> None:
    with pytest.raises(ValidationError, match="a notice announces"):
        CallbackBody(notification_id="n", payment_id="p", provider_ref="r", outcome=outcome, amount_fen=1)

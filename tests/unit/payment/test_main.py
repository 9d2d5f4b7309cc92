"""The payment service's settings check themselves before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.payment.main import PaymentSettings
from shared.contracts import PaymentMethod
from shared.crypto import generate_token_keypair

pytestmark = pytest.mark.unit


def test_dev_defaults_hold_together_and_callbacks_come_to_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_HOST", "10.0.0.7")

    settings = PaymentSettings()

    policy = settings.policy()
    assert (policy.deadline.total_seconds(), policy.max_backoff.total_seconds()) == (30, 60)
    assert policy.notify_url(PaymentMethod.ALIPAY) == "http://10.0.0.7:8002/v1/payments/callbacks/alipay"
    assert settings.payment_provider_concurrency == 8


def test_a_callback_base_url_given_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_CALLBACK_BASE_URL", "https://pay.shop.example/")

    policy = PaymentSettings().policy()

    assert (
        policy.notify_url(PaymentMethod.WECHAT_PAY)
        == "https://pay.shop.example/v1/payments/callbacks/wechat_pay"
    )


def test_a_private_key_that_does_not_match_the_public_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    private, _ = generate_token_keypair()
    monkeypatch.setenv("PAYMENT_TOKEN_PRIVATE_KEY", private)

    with pytest.raises(ValidationError, match="does not match PAYMENT_TOKEN_PUBLIC_KEY"):
        PaymentSettings()


def test_a_matching_key_pair_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = generate_token_keypair()
    monkeypatch.setenv("PAYMENT_TOKEN_PRIVATE_KEY", private)
    monkeypatch.setenv("PAYMENT_TOKEN_PUBLIC_KEY", public)

    assert PaymentSettings().payment_token_private_key.get_secret_value() == private


def test_a_private_key_that_is_not_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_TOKEN_PRIVATE_KEY", "not-a-key")

    with pytest.raises(ValidationError, match="PAYMENT_TOKEN_PRIVATE_KEY"):
        PaymentSettings()


def test_a_lease_shorter_than_a_provider_call_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_CALL_TIMEOUT_S", "10")
    monkeypatch.setenv("PAYMENT_OPERATION_LEASE_S", "10")

    with pytest.raises(ValidationError, match="PAYMENT_OPERATION_LEASE_S"):
        PaymentSettings()


def test_nonces_must_be_kept_longer_than_a_callback_stays_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_CALLBACK_NONCE_TTL_S", "300")

    with pytest.raises(ValidationError, match="PAYMENT_CALLBACK_NONCE_TTL_S"):
        PaymentSettings()

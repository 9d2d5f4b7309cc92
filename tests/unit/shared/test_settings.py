"""Settings validate themselves: production refuses placeholder or missing secrets, naming them."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from shared.errors import DependencyLost, Outage
from shared.settings import SharedSettings, load_settings

pytestmark = pytest.mark.unit


class PaymentLikeSettings(SharedSettings):
    provider_secret: SecretStr = SecretStr("dev-secret")


REAL = {
    "MONGO_URL": "mongodb://orders:s3cr3t@mongo-0:27017/?replicaSet=rs0",
    "PROVIDER_SECRET": "k2f9-real",
    "AUTH_SIGNING_KEY": "prod-signing-key-7f3a9c2e8b1d4f6a0c5e9b2d7a4f1c8e",
    "PII_ENCRYPTION_KEYS": "prod1:cHJvZC1waWkta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTI=",
    "PII_INDEX_KEY": "cHJvZC1waWktaW5kZXgta2V5LTAxMjM0NTY3ODlhYmM=",
    "PAYMENT_TOKEN_PUBLIC_KEY": "rbDbHy6-gNH3qZr7nBuXqXV8Za2V9NdkLSBLD6eP-GM",
}


def test_dev_runs_on_the_sandbox_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "dev")
    assert PaymentLikeSettings().provider_secret.get_secret_value() == "dev-secret"


def test_prod_with_real_secrets_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    settings = PaymentLikeSettings()
    assert settings.provider_secret.get_secret_value() == "k2f9-real"
    assert "k2f9" not in repr(settings), "secrets never show in a repr or a log line"


def test_prod_refuses_the_dev_default_given_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    for name, value in REAL.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "AUTH_SIGNING_KEY", SharedSettings.model_fields["auth_signing_key"].default.get_secret_value()
    )
    with pytest.raises(ValidationError, match="AUTH_SIGNING_KEY"):
        PaymentLikeSettings()


def test_a_short_signing_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_SIGNING_KEY", "too-short")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        SharedSettings()


@pytest.mark.parametrize("placeholder", ["dev-secret", "change-me", "  ", "secret"])
def test_prod_refuses_a_placeholder_secret_and_names_it(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    monkeypatch.setenv("MONGO_URL", REAL["MONGO_URL"])
    monkeypatch.setenv("PROVIDER_SECRET", placeholder)
    with pytest.raises(ValidationError, match="PROVIDER_SECRET") as refused:
        PaymentLikeSettings()
    assert "MONGO_URL" not in str(refused.value)


def test_prod_refuses_a_missing_secret_even_when_its_dev_default_looks_real(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    monkeypatch.setenv("PROVIDER_SECRET", REAL["PROVIDER_SECRET"])
    monkeypatch.delenv("MONGO_URL", raising=False)
    with pytest.raises(ValidationError, match="MONGO_URL"):
        PaymentLikeSettings()


def test_load_settings_exits_with_a_message_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    monkeypatch.setenv("MONGO_URL", REAL["MONGO_URL"])
    monkeypatch.setenv("PROVIDER_SECRET", "change-me")
    with pytest.raises(SystemExit) as exited:
        load_settings(PaymentLikeSettings)
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "refusing to start PaymentLikeSettings" in message and "PROVIDER_SECRET" in message
    assert "s3cr3t" not in message, "the message names secrets, never shows their values"


def test_applied_ids_must_outlive_the_topics_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPIC_RETENTION_S", "604800")
    monkeypatch.setenv("PROCESSED_EVENT_TTL_S", "3600")
    with pytest.raises(ValidationError, match="PROCESSED_EVENT_TTL_S"):
        SharedSettings()


def test_an_outage_is_tolerated_until_it_lasts_past_its_limit() -> None:
    now = [0.0]
    outage = Outage("the datastore", limit_s=10, clock=lambda: now[0])
    error = ConnectionError("refused")
    outage.failed(error)
    now[0] = 9.0
    outage.failed(error)
    outage.recovered()
    now[0] = 30.0
    outage.failed(error)  # a new outage starts its own clock
    now[0] = 41.0
    with pytest.raises(DependencyLost, match="the datastore kept failing for 11s"):
        outage.failed(error)

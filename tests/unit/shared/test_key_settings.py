"""The key settings (PII_ENCRYPTION_KEYS, PII_INDEX_KEY, PAYMENT_TOKEN_PUBLIC_KEY) are checked when
settings load, and production refuses their dev defaults."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from shared.crypto import PersonalData, TokenOpener, TokenSealer, generate_index_key, generate_token_keypair
from shared.settings import (
    DEV_PAYMENT_TOKEN_PRIVATE_KEY,
    DEV_PAYMENT_TOKEN_PUBLIC_KEY,
    SharedSettings,
    load_settings,
)

pytestmark = pytest.mark.unit

_, REAL_PUBLIC_KEY = generate_token_keypair()
PROD = {
    "ENVIRONMENT": "prod",
    "MONGO_URL": "mongodb://orders:s3cr3t@mongo-0:27017/?replicaSet=rs0",
    "AUTH_SIGNING_KEY": "prod-signing-key-7f3a9c2e8b1d4f6a0c5e9b2d7a4f1c8e",
    "PII_ENCRYPTION_KEYS": f"prod2:{generate_index_key()},prod1:{generate_index_key()}",
    "PII_INDEX_KEY": generate_index_key(),
    "PAYMENT_TOKEN_PUBLIC_KEY": REAL_PUBLIC_KEY,
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev settings, whatever the shell running the tests has set."""
    for name in PROD:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def prod(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in PROD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_the_dev_defaults_work_together() -> None:
    settings = SharedSettings()
    personal = PersonalData.from_settings(settings)

    assert personal.sealing_key_id == "dev1"
    assert personal.open(personal.seal("13800138000")) == "13800138000"
    assert settings.payment_token_public_key == DEV_PAYMENT_TOKEN_PUBLIC_KEY
    opener = TokenOpener(SecretStr(DEV_PAYMENT_TOKEN_PRIVATE_KEY))
    assert opener.public_key == DEV_PAYMENT_TOKEN_PUBLIC_KEY
    assert opener.open(TokenSealer(settings.payment_token_public_key).seal("tok_1")) == "tok_1"


def test_from_settings_uses_the_index_key(monkeypatch: pytest.MonkeyPatch) -> None:
    index_key = generate_index_key()
    monkeypatch.setenv("PII_INDEX_KEY", index_key)

    from_settings = PersonalData.from_settings(SharedSettings())

    assert from_settings.blind_index("li@example.com") == PersonalData(
        SecretStr(f"other:{generate_index_key()}"), SecretStr(index_key)
    ).blind_index("li@example.com")


def test_prod_starts_with_real_keys(prod: pytest.MonkeyPatch) -> None:
    settings = SharedSettings()
    assert PersonalData.from_settings(settings).sealing_key_id == "prod2"
    assert settings.payment_token_public_key == REAL_PUBLIC_KEY


@pytest.mark.parametrize("variable", ["PII_ENCRYPTION_KEYS", "PII_INDEX_KEY"])
def test_prod_refuses_a_missing_or_dev_default_pii_key(prod: pytest.MonkeyPatch, variable: str) -> None:
    prod.delenv(variable)
    with pytest.raises(ValidationError, match=variable):
        SharedSettings()

    default = SharedSettings.model_fields[variable.lower()].default.get_secret_value()
    prod.setenv(variable, default)
    with pytest.raises(ValidationError, match=variable):
        SharedSettings()


@pytest.mark.parametrize(
    "dev_key",
    [DEV_PAYMENT_TOKEN_PUBLIC_KEY, DEV_PAYMENT_TOKEN_PUBLIC_KEY + "=", f" {DEV_PAYMENT_TOKEN_PUBLIC_KEY} "],
)
def test_prod_refuses_the_dev_payment_token_key_however_written(
    prod: pytest.MonkeyPatch, dev_key: str
) -> None:
    prod.setenv("PAYMENT_TOKEN_PUBLIC_KEY", dev_key)
    with pytest.raises(ValidationError, match="PAYMENT_TOKEN_PUBLIC_KEY"):
        SharedSettings()


def test_prod_refuses_a_payment_token_key_left_unset(prod: pytest.MonkeyPatch) -> None:
    prod.delenv("PAYMENT_TOKEN_PUBLIC_KEY")
    with pytest.raises(ValidationError, match="PAYMENT_TOKEN_PUBLIC_KEY"):
        SharedSettings()


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("PII_ENCRYPTION_KEYS", "k1:short", "PII_ENCRYPTION_KEYS key 'k1' must be 32 bytes"),
        ("PII_ENCRYPTION_KEYS", "a:" + "A" * 43 + ",a:" + "B" * 43, "names key id 'a' twice"),
        ("PII_INDEX_KEY", "not base64!", "PII_INDEX_KEY must be 32 bytes in base64url"),
        (
            "PAYMENT_TOKEN_PUBLIC_KEY",
            "replace-me",  # deploy/k8s/overlays/prod until an operator replaces it
            "PAYMENT_TOKEN_PUBLIC_KEY must be 32 bytes in base64url, not 7 bytes "
            "(`shopctl keys payment-token` makes one)",
        ),
    ],
)
def test_malformed_keys_are_refused_at_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    complaint: str,
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SystemExit):
        load_settings(SharedSettings)

    message = capsys.readouterr().err
    assert complaint in message
    assert "AAAAAAAA" not in message and "BBBBBBBB" not in message, "the message never shows a key"

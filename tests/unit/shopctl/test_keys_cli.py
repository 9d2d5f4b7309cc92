"""`shopctl keys`: fresh keys that the settings and shared.crypto accept, one per line on stdout."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from shared.crypto import PersonalData, TokenOpener, TokenSealer, parse_key_ring
from shared.settings import SharedSettings
from shopctl.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev settings, whatever the shell running the tests has set."""
    monkeypatch.delenv("ENVIRONMENT", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_a_pii_entry_seals_and_joins_a_ring(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "keys", "pii")
    (entry,) = out.splitlines()

    assert status == 0 and "PII_ENCRYPTION_KEYS" in err
    kid = entry.split(":")[0]
    personal = PersonalData(SecretStr(f"{entry},old:{'A' * 43}"))
    assert personal.key_id(personal.seal("13800138000")) == kid


def test_each_pii_entry_is_new(capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = run(capsys, "keys", "pii")
    _, second, _ = run(capsys, "keys", "pii")

    assert first != second
    assert len(parse_key_ring(f"{first.strip()},{second.strip()}")) == 2, "random ids do not collide"


def test_a_pii_entry_takes_the_key_id_given(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "keys", "pii", "--kid", "2026-11")

    assert status == 0
    assert list(parse_key_ring(out.strip())) == ["2026-11"]


@pytest.mark.parametrize("kid", ["a:b", "a.b", "", "x" * 33])
def test_a_bad_key_id_is_refused_with_no_key_printed(capsys: pytest.CaptureFixture[str], kid: str) -> None:
    status, out, err = run(capsys, "keys", "pii", "--kid", kid)

    assert (status, out) == (2, "")
    assert "is not a key id" in err


def test_an_index_key_is_accepted_as_pii_index_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, "keys", "pii-index")

    assert status == 0 and "PII_INDEX_KEY" in err
    monkeypatch.setenv("PII_INDEX_KEY", out.strip())
    assert SharedSettings().pii_index_key.get_secret_value() == out.strip()


def test_a_payment_token_pair_prints_matching_keys_as_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = run(capsys, "keys", "payment-token")

    assert status == 0 and "payment service" in err
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert set(lines) == {"PAYMENT_TOKEN_PRIVATE_KEY", "PAYMENT_TOKEN_PUBLIC_KEY"}
    opener = TokenOpener(SecretStr(lines["PAYMENT_TOKEN_PRIVATE_KEY"]))
    assert opener.public_key == lines["PAYMENT_TOKEN_PUBLIC_KEY"]
    assert opener.open(TokenSealer(lines["PAYMENT_TOKEN_PUBLIC_KEY"]).seal("tok_1")) == "tok_1"
    monkeypatch.setenv("PAYMENT_TOKEN_PUBLIC_KEY", lines["PAYMENT_TOKEN_PUBLIC_KEY"])
    assert SharedSettings().payment_token_public_key == lines["PAYMENT_TOKEN_PUBLIC_KEY"]


def test_keys_work_in_production_since_that_is_where_real_keys_are_made(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")

    status, out, _ = run(capsys, "keys", "payment-token")

    assert status == 0 and out.count("\n") == 2


def test_keys_without_a_kind_prints_the_kinds_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "keys")

    assert (status, out) == (2, "")
    for kind in ("pii", "pii-index", "payment-token"):
        assert kind in err


def test_help_lists_the_keys_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "keys" in out and "print fresh keys" in out

    status, out, _ = run(capsys, "keys", "pii", "--help")
    assert status == 0 and "--kid" in out and "examples:" in out

"""`shopctl token`: signed platform tokens for local use, refused in production."""

from __future__ import annotations

from importlib.metadata import entry_points

import jwt
import pytest

from shared.auth import InvalidToken, Principal, Role, TokenVerifier
from shared.settings import SharedSettings
from shopctl.cli import main

pytestmark = pytest.mark.unit

SIGNING_KEY = "a-test-signing-key-for-shopctl-0123456789abcdef"
PROD_SECRETS = {
    "AUTH_SIGNING_KEY": SIGNING_KEY,
    "MONGO_URL": "mongodb://db.internal:27017",
    "PII_ENCRYPTION_KEYS": "prod1:cHJvZC1waWkta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTI=",
    "PII_INDEX_KEY": "cHJvZC1waWktaW5kZXgta2V5LTAxMjM0NTY3ODlhYmM=",
    "PAYMENT_TOKEN_PUBLIC_KEY": "rbDbHy6-gNH3qZr7nBuXqXV8Za2V9NdkLSBLD6eP-GM",
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dev environment with its own signing key, whatever the shell running the tests has set."""
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    monkeypatch.delenv("AUTH_ACCESS_TOKEN_TTL_S", raising=False)
    monkeypatch.setenv("AUTH_SIGNING_KEY", SIGNING_KEY)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


async def verified(token: str) -> Principal:
    return await TokenVerifier(SharedSettings()).verify(token)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--role", "customer", "--subject", "cust-1"], Principal("cust-1", Role.CUSTOMER)),
        (["--role", "admin", "--subject", "ops"], Principal("ops", Role.ADMIN)),
        (["--role", "analyst", "--subject", "data-team"], Principal("data-team", Role.ANALYST)),
        (
            ["--role", "merchant", "--subject", "m-tea"],
            Principal("m-tea", Role.MERCHANT, merchant_id="m-tea"),
        ),
        (
            ["--role", "merchant", "--subject", "alice", "--merchant-id", "m-tea"],
            Principal("alice", Role.MERCHANT, merchant_id="m-tea"),
        ),
    ],
)
async def test_the_last_line_of_stdout_is_a_token_the_services_accept(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: Principal
) -> None:
    status, out, err = run(capsys, "token", *argv)

    assert status == 0
    assert await verified(last_line(out)) == expected
    assert expected.role.value in err and "Authorization: Bearer" in err


async def test_the_token_is_signed_with_the_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out, _ = run(capsys, "token", "--role", "admin", "--subject", "ops")
    token = last_line(out)

    monkeypatch.setenv("AUTH_SIGNING_KEY", "another-signing-key-entirely-0123456789abcdef")
    with pytest.raises(InvalidToken):
        await verified(token)


async def test_the_lifetime_defaults_to_the_access_token_ttl_and_can_be_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lifetime(*extra: str) -> int:
        _, out, _ = run(capsys, "token", "--role", "customer", "--subject", "cust-1", *extra)
        claims = jwt.decode(last_line(out), options={"verify_signature": False})
        return int(claims["exp"]) - int(claims["iat"])

    assert lifetime() == 3600
    assert lifetime("--ttl-s", "600") == 600
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL_S", "120")
    assert lifetime() == 120


@pytest.mark.parametrize("environment", ["prod", "PROD", " prod "])
def test_production_is_refused_with_no_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)

    status, out, err = run(capsys, "token", "--role", "admin", "--subject", "ops")

    assert status == 2
    assert out == ""
    assert "refuses to run with ENVIRONMENT=prod" in err


def test_production_with_complete_settings_is_refused_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    for name, value in PROD_SECRETS.items():
        monkeypatch.setenv(name, value)

    status, out, err = run(capsys, "token", "--role", "admin", "--subject", "ops")

    assert (status, out) == (2, "")
    assert "refuses to run with ENVIRONMENT=prod" in err


def test_test_environments_get_tokens(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "test")

    status, out, err = run(capsys, "token", "--role", "admin", "--subject", "ops")

    assert status == 0 and last_line(out).count(".") == 2
    assert "ENVIRONMENT=test" in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--role", "guest", "--subject", "g"], "invalid choice: 'guest'"),
        (["--role", "customer"], "the following arguments are required: --subject"),
        (["--role", "customer", "--subject", "has space"], "is not an id"),
        (
            ["--role", "admin", "--subject", "ops", "--merchant-id", "m-1"],
            "--merchant-id is for merchant tokens",
        ),
        (["--role", "admin", "--subject", "ops", "--ttl-s", "0"], "give 1 to"),
        (["--role", "admin", "--subject", "ops", "--ttl-s", "soon"], "not a whole number of seconds"),
    ],
)
def test_bad_arguments_say_what_is_wrong_and_print_no_token(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    status, out, err = run(capsys, "token", *argv)

    assert (status, out) == (2, "")
    assert complaint in err


def test_help_lists_the_token_command_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "token" in out and "print a signed platform token" in out
    assert "events" in out and "tail, replay and export the event streams" in out

    status, out, _ = run(capsys, "token", "--help")
    assert status == 0
    for option in ["--role", "--subject", "--merchant-id", "--ttl-s", "ENVIRONMENT=prod", "examples:"]:
        assert option in out


def test_no_command_prints_the_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys)

    assert (status, out) == (2, "")
    assert "usage: shopctl" in err and "token" in err


def test_the_console_script_points_at_main() -> None:
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "shopctl"]
    assert script.value == "shopctl.cli:main"

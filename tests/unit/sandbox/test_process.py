"""The sandbox process: settings shared with the payment service, readiness, its documentation, and
its refusal to run in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.settings import SandboxSettings
from services.payment.adapters import ProviderSettings
from services.payment.protocol import SANDBOX_ENDPOINT
from shared.contracts import PaymentMethod
from tests.unit.sandbox.conftest import World

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_with_no_configuration_the_sandbox_and_the_payment_service_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for method in PaymentMethod:
        for suffix in ("endpoint", "merchant_id", "api_key", "callback_key"):
            monkeypatch.delenv(f"{method.value}_{suffix}".upper(), raising=False)
    for name in ("SANDBOX_HOST", "SANDBOX_PORT", "SANDBOX_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    sandbox, payment = SandboxSettings(), ProviderSettings()

    assert sandbox.public_url == SANDBOX_ENDPOINT
    for method in PaymentMethod:
        assert payment.endpoint(method) == sandbox.public_url
        assert sandbox.credentials(method) == payment.credentials(method)


def test_both_ends_read_a_key_from_the_same_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIPAY_API_KEY", "a shared key")

    assert SandboxSettings().credentials(PaymentMethod.ALIPAY).api_key == "a shared key"
    assert ProviderSettings().credentials(PaymentMethod.ALIPAY).api_key == "a shared key"


def test_the_pay_pages_public_address_follows_host_and_port_unless_given() -> None:
    assert SandboxSettings(sandbox_host="10.0.0.5", sandbox_port=9000).public_url == "http://10.0.0.5:9000"
    assert (
        SandboxSettings(sandbox_public_url="https://pay.dev.example/").public_url == "https://pay.dev.example"
    )


def test_the_settings_refuse_prod() -> None:
    with pytest.raises(ValueError, match="refusing ENVIRONMENT=prod"):
        SandboxSettings(environment="prod")


def test_python_m_sandbox_refuses_to_start_in_prod() -> None:
    env = {"PATH": os.environ["PATH"], "ENVIRONMENT": "prod"}

    started = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sandbox"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert started.returncode != 0
    assert "refusing ENVIRONMENT=prod" in started.stderr, started.stderr


async def test_the_sandbox_is_ready_and_documents_its_test_hooks(world: World) -> None:
    ready = await world.http.get("/readyz")
    paths = (await world.http.get("/openapi.json")).json()["paths"]

    assert ready.status_code == 200
    for hook in (
        "/sandbox/payments/{payment_id}/decide",
        "/sandbox/payments/{payment_id}/notify",
        "/sandbox/callbacks",
    ):
        [operation] = paths[hook].values()
        assert operation["tags"] == ["test hooks (dev only)"]
    assert "/ledger" in paths and "/v1/{method}/payments" in paths

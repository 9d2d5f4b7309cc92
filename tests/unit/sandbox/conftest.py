"""The sandbox in process (httpx.ASGITransport) with the payment service's real adapters in front of it
and a stand-in merchant behind it, receiving the callbacks: no network, no ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from sandbox.app import build_app
from sandbox.provider import Sandbox
from sandbox.settings import SandboxSettings
from services.payment.adapters import HttpProvider, ProviderSettings, build_providers
from services.payment.protocol import SANDBOX_ENDPOINT
from shared.contracts import PaymentMethod

PUBLIC_URL = "http://sandbox.test"
NOTIFY_URL = "https://shop.test/v1/payments/callbacks"
# tok_delay and tok_timeout take this long here, long enough to outlast a call with a short timeout.
SLOW_S = 0.3
T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Merchant:
    """The merchant's callback endpoint, as the sandbox's injected sender: it records every delivery
    and answers the scripted statuses in turn (raising a scripted error), then 200."""

    received: list[Received] = field(default_factory=list)
    script: list[int | Exception] = field(default_factory=list)

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        self.received.append(Received(url, dict(headers), body))
        answer = self.script.pop(0) if self.script else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class World:
    sandbox: Sandbox
    http: httpx.AsyncClient
    merchant: Merchant

    def provider(self, method: PaymentMethod, timeout_s: float = 2.0) -> HttpProvider:
        settings = ProviderSettings(provider_call_timeout_s=timeout_s)
        provider = build_providers(settings, self.http)[method]
        assert isinstance(provider, HttpProvider)
        return provider

    async def ledger(self, payment_id: str) -> list[tuple[str, str]]:
        response = await self.http.get("/ledger", params={"payment_id": payment_id})
        assert response.status_code == 200, response.text
        return [(entry["operation"], entry["outcome"]) for entry in response.json()["entries"]]

    async def callbacks(self, payment_id: str) -> list[dict[str, Any]]:
        response = await self.http.get("/sandbox/callbacks", params={"payment_id": payment_id})
        assert response.status_code == 200, response.text
        return list(response.json())


@pytest.fixture
async def world() -> AsyncIterator[World]:
    settings = SandboxSettings(
        sandbox_public_url=PUBLIC_URL + "/",
        sandbox_delay_s=SLOW_S,
        sandbox_timeout_hold_s=SLOW_S,
        sandbox_callback_attempts=3,
        sandbox_callback_backoff_s=0.001,
    )
    merchant = Merchant()
    sandbox = Sandbox(settings, send=merchant)
    # The adapters call the endpoint their settings name; the transport takes any host to the app.
    transport = httpx.ASGITransport(app=build_app(sandbox))
    async with httpx.AsyncClient(transport=transport, base_url=SANDBOX_ENDPOINT) as http:
        yield World(sandbox=sandbox, http=http, merchant=merchant)
    await sandbox.close()


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Poll `probe` until `done` holds, or fail after two seconds."""
    deadline = time.monotonic() + 2.0
    while True:
        found = await probe()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last saw {found!r}")
        await asyncio.sleep(0.005)

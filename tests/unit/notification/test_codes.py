"""A paid virtual order's codes reach its buyer once, and only the buyer reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from services.notification.api import build_router
from services.notification.channels import default_channels
from services.notification.handlers import NotificationService, handle_batch
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import AssignedCodes, CodesAssigned
from shared.crypto import PersonalData
from shared.http import create_app
from shared.kafka import Delivery, new_envelope
from shared.settings import SharedSettings
from tests.twins.notification import InMemoryNotificationStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PERSONAL = PersonalData(SecretStr("n1:dGVzdC1vbmx5LW5vdGlmaWNhdGlvbi1jb2Rlcy1rZXk"))
CODES = ["TOPUP-1111-AAAA", "TOPUP-2222-BBBB"]


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


def assigned(order_id: str = "o-1", customer_id: str = "c-1") -> Delivery:
    event = CodesAssigned(
        order_id=order_id,
        customer_id=customer_id,
        lines=[AssignedCodes(sku="TOPUP", sealed_codes=[PERSONAL.seal(code) for code in CODES])],
    )
    envelope = new_envelope(event, source="inventory", correlation_id="corr")
    return Delivery(envelope, event, "inventory.events", 0, 0)


@pytest.fixture
def store() -> InMemoryNotificationStore:
    return InMemoryNotificationStore()


@pytest.fixture
async def client(store: InMemoryNotificationStore) -> AsyncIterator[httpx.AsyncClient]:
    service = NotificationService(store=store, channels=default_channels(), clock=lambda: T0)
    delivery = assigned()
    await handle_batch(service, [delivery])
    await handle_batch(service, [delivery])  # redelivered
    app = create_app("notification", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service, personal=PERSONAL))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def listed(client: httpx.AsyncClient, caller: Principal, **params: str) -> httpx.Response:
    response = await client.get("/v1/notifications", params=params, headers=bearer(caller))
    assert response.status_code == 200, response.text
    return response


async def test_the_buyer_gets_one_notification_carrying_the_codes(
    client: httpx.AsyncClient, store: InMemoryNotificationStore
) -> None:
    [item] = (await listed(client, Principal("c-1", Role.CUSTOMER))).json()["items"]

    assert (item["template"], item["recipient"]) == ("customer.codes_delivered", "c-1")
    assert item["codes"] == CODES
    assert not any(code in item["subject"] + item["body"] for code in CODES)
    [kept] = store.notifications.values()
    assert [PERSONAL.open(code) for code in kept.sealed_codes] == CODES


async def test_a_guest_of_the_order_reads_the_codes_and_nobody_else_does(client: httpx.AsyncClient) -> None:
    [as_guest] = (await listed(client, Principal("guest-1", Role.GUEST, order_id="o-1"))).json()["items"]
    as_admin = await listed(client, Principal("ops-1", Role.ADMIN), order_id="o-1")
    as_other = await listed(client, Principal("c-2", Role.CUSTOMER), order_id="o-1")

    assert as_guest["codes"] == CODES
    assert [item["codes"] for item in as_admin.json()["items"]] == [None]
    assert not any(code in as_admin.text for code in CODES)
    assert as_other.json()["items"] == []

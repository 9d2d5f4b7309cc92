"""GET /v1/notifications over an in-process app and the in-memory log: each recipient sees their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.notification.api import build_router
from services.notification.channels import default_channels
from services.notification.handlers import NotificationService, handle_batch
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import OrderConfirmed, OrderLine, OrderRejected
from shared.http import create_app
from shared.kafka import Delivery, new_envelope
from shared.settings import SharedSettings
from tests.twins.notification import InMemoryNotificationStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

ADMIN = Principal("ops-1", Role.ADMIN)
CUSTOMER_1 = Principal("c-1", Role.CUSTOMER)
CUSTOMER_2 = Principal("c-2", Role.CUSTOMER)
MERCHANT_1 = Principal("merchant-user-1", Role.MERCHANT, merchant_id="m-1")
GUEST_OF_O_1 = Principal("guest-1", Role.GUEST, order_id="o-1")


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """c-1 has o-1 (confirmed, from merchant m-1) and o-2 (rejected); c-2 has o-3 (confirmed, m-2)."""
    times = iter([T0] * 4 + [T0 + timedelta(minutes=1)] * 2 + [T0 + timedelta(minutes=2)] * 4)
    service = NotificationService(
        store=InMemoryNotificationStore(), channels=default_channels(), clock=lambda: next(times)
    )
    tea = OrderLine(sku="TEA-1", name="Longjing tea", merchant_id="m-1", quantity=1, unit_price_fen=1234)
    cup = OrderLine(sku="CUP-1", name="Celadon cup", merchant_id="m-2", quantity=2, unit_price_fen=500)
    events = [
        OrderConfirmed(
            order_id="o-1", order_no="n-1", customer_id="c-1", lines=[tea], total_fen=1234, payment_id="p"
        ),
        OrderRejected(order_id="o-2", order_no="n-2", customer_id="c-1", reason="FRAUD"),
        OrderConfirmed(
            order_id="o-3", order_no="n-3", customer_id="c-2", lines=[cup], total_fen=1000, payment_id="q"
        ),
    ]
    for offset, event in enumerate(events):
        envelope = new_envelope(event, source="order", correlation_id="corr")
        await handle_batch(service, [Delivery(envelope, event, "order.events", 0, offset)])
    app = create_app("notification", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def seen(client: httpx.AsyncClient, caller: Principal, **params: str) -> list[tuple[str, str, str]]:
    """(order_id, recipient, template) of each notification the caller gets for these filters."""
    response = await client.get("/v1/notifications", params=params, headers=bearer(caller))
    assert response.status_code == 200, response.text
    return [(i["order_id"], i["recipient"], i["template"]) for i in response.json()["items"]]


async def test_notifications_of_an_order_carry_the_public_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications", params={"order_id": "o-1"}, headers=bearer(ADMIN))

    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["role"], i["recipient"], i["template"]) for i in items] == [
        ("merchant", "m-1", "merchant.new_order"),
        ("customer", "c-1", "customer.order_confirmed"),
    ]
    for item in items:
        assert {"notification_id", "recipient", "role", "channel", "template", "status", "at"} <= item.keys()
        assert item["channel"] == "inbox" and item["status"] == "sent"
        assert "¥12.34" in item["body"]


async def test_notifications_of_a_recipient_are_oldest_first(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications", params={"recipient": "c-1"}, headers=bearer(ADMIN))

    items = response.json()["items"]
    assert [i["template"] for i in items] == ["customer.order_confirmed", "customer.order_rejected"]
    assert items[0]["at"] < items[1]["at"]


async def test_an_unknown_order_has_no_notifications(client: httpx.AsyncClient) -> None:
    assert await seen(client, ADMIN, order_id="nope") == []


@pytest.mark.parametrize(
    "params", [{}, {"order_id": ""}, {"recipient": "bad id!"}, {"order_id": "o-1", "limit": "0"}]
)
async def test_an_admin_query_without_a_valid_filter_is_a_problem(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/v1/notifications", params=params, headers=bearer(ADMIN))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 422


async def test_without_a_token_the_log_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications", params={"order_id": "o-1"})

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_reads_anyones_notifications(client: httpx.AsyncClient) -> None:
    assert await seen(client, ADMIN, recipient="c-2") == [("o-3", "c-2", "customer.order_confirmed")]
    assert await seen(client, ADMIN, recipient="m-2") == [("o-3", "m-2", "merchant.new_order")]


async def test_a_customer_without_filters_gets_their_own_inbox(client: httpx.AsyncClient) -> None:
    assert await seen(client, CUSTOMER_1) == [
        ("o-1", "c-1", "customer.order_confirmed"),
        ("o-2", "c-1", "customer.order_rejected"),
    ]
    assert await seen(client, CUSTOMER_2) == [("o-3", "c-2", "customer.order_confirmed")]


async def test_a_customers_order_filter_shows_only_what_was_addressed_to_them(
    client: httpx.AsyncClient,
) -> None:
    assert await seen(client, CUSTOMER_1, order_id="o-1") == [("o-1", "c-1", "customer.order_confirmed")]


@pytest.mark.parametrize("params", [{"recipient": "c-2"}, {"recipient": "m-1"}, {"order_id": "o-3"}])
async def test_a_filter_naming_someone_else_never_widens_a_customers_view(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert await seen(client, CUSTOMER_1, **params) == []


async def test_a_customer_whose_id_matches_a_merchant_id_does_not_see_that_merchants_notices(
    client: httpx.AsyncClient,
) -> None:
    assert await seen(client, Principal("m-1", Role.CUSTOMER)) == []


async def test_a_merchant_sees_the_notices_sent_to_its_merchant_id_only(client: httpx.AsyncClient) -> None:
    assert await seen(client, MERCHANT_1) == [("o-1", "m-1", "merchant.new_order")]
    assert await seen(client, MERCHANT_1, order_id="o-1") == [("o-1", "m-1", "merchant.new_order")]
    assert await seen(client, MERCHANT_1, order_id="o-3") == []
    assert await seen(client, MERCHANT_1, recipient="c-1") == []
    assert await seen(client, MERCHANT_1, recipient="m-2") == []


async def test_a_guest_sees_the_customer_notices_of_its_one_order(client: httpx.AsyncClient) -> None:
    assert await seen(client, GUEST_OF_O_1) == [("o-1", "c-1", "customer.order_confirmed")]
    assert await seen(client, GUEST_OF_O_1, order_id="o-2") == []
    assert await seen(client, GUEST_OF_O_1, recipient="m-1") == []


async def test_the_openapi_document_lists_the_route_with_its_errors_and_examples(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    listing = document["paths"]["/v1/notifications"]["get"]
    assert {"200", "401", "422"} <= listing["responses"].keys()
    problem = listing["responses"]["401"]["content"]["application/problem+json"]
    assert problem["example"]["status"] == 401
    assert listing["security"] == [{"HTTPBearer": []}]
    schemas = document["components"]["schemas"]
    assert schemas["NotificationOut"]["examples"] and schemas["NotificationList"]["examples"]
    assert (await client.get("/docs")).status_code == 200

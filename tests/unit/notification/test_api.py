"""GET /v1/notifications over an in-process app and the in-memory log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.notification.api import build_router
from services.notification.channels import default_channels
from services.notification.handlers import NotificationService, handle_batch
from shared.contracts import OrderConfirmed, OrderLine, OrderRejected
from shared.http import create_app
from shared.kafka import Delivery, new_envelope
from tests.twins.notification import InMemoryNotificationStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def client_with_history() -> httpx.AsyncClient:
    times = iter([T0, T0, T0, T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1)])
    service = NotificationService(
        store=InMemoryNotificationStore(), channels=default_channels(), clock=lambda: next(times)
    )
    line = OrderLine(sku="TEA-1", name="Longjing tea", merchant_id="m-1", quantity=1, unit_price_fen=1234)
    events = [
        OrderConfirmed(
            order_id="o-1", order_no="n-1", customer_id="c-1", lines=[line], total_fen=1234, payment_id="p"
        ),
        OrderRejected(order_id="o-2", order_no="n-2", customer_id="c-1", reason="FRAUD"),
    ]
    for offset, event in enumerate(events):
        envelope = new_envelope(event, source="order", correlation_id="corr")
        await handle_batch(service, [Delivery(envelope, event, "order.events", 0, offset)])
    app = create_app("notification", readiness={})
    app.include_router(build_router(service))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_notifications_of_an_order_carry_the_public_contract() -> None:
    async with await client_with_history() as client:
        response = await client.get("/v1/notifications", params={"order_id": "o-1"})

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


async def test_notifications_of_a_recipient_are_oldest_first() -> None:
    async with await client_with_history() as client:
        response = await client.get("/v1/notifications", params={"recipient": "c-1"})

    items = response.json()["items"]
    assert [i["template"] for i in items] == ["customer.order_confirmed", "customer.order_rejected"]
    assert items[0]["at"] < items[1]["at"]


async def test_an_unknown_order_has_no_notifications() -> None:
    async with await client_with_history() as client:
        response = await client.get("/v1/notifications", params={"order_id": "nope"})

    assert response.status_code == 200 and response.json() == {"items": []}


@pytest.mark.parametrize(
    "params", [{}, {"order_id": ""}, {"recipient": "bad id!"}, {"order_id": "o-1", "limit": 0}]
)
async def test_a_query_without_a_valid_filter_is_a_problem(params: dict[str, str]) -> None:
    async with await client_with_history() as client:
        response = await client.get("/v1/notifications", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 422

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.payment.api import build_router
from services.payment.domain import Payment, ProviderResult
from shared.contracts import PaymentMethod, PaymentRequested
from shared.http import create_app
from tests.twins.payment import InMemoryPaymentStore

pytestmark = pytest.mark.unit


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = InMemoryPaymentStore()
    request = PaymentRequested(
        order_id="ord-1", customer_id="c", amount_fen=500, method=PaymentMethod.ALIPAY, token="tok_secret"
    )
    payment, _ = Payment.authorize(
        request, ProviderResult(approved=True, provider_ref="ref-1"), datetime.now(UTC)
    )
    store.payments[payment.payment_id] = payment
    app = create_app("payment", readiness={})
    app.include_router(build_router(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_list_by_order_returns_the_payment_without_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", params={"order_id": "ord-1"})

    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (item["order_id"], item["status"], item["amount_fen"], item["provider_ref"]) == (
        "ord-1",
        "authorized",
        500,
        "ref-1",
    )
    assert "tok_secret" not in response.text


async def test_list_for_an_unknown_order_is_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", params={"order_id": "nope"})

    assert response.json() == {"items": []}


async def test_list_requires_an_order_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments")

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_get_by_id(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/payments", params={"order_id": "ord-1"})).json()["items"][0]

    response = await client.get(f"/v1/payments/{listed['payment_id']}")

    assert response.status_code == 200
    assert response.json() == listed


async def test_unknown_payment_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments/pay_missing")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payment-not-found")

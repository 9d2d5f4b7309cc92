"""GET /v1/payments over an in-process app and the in-memory store: who may read which payment."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.payment.api import build_router
from services.payment.domain import Payment, ProviderResult, payment_id_for
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import PaymentMethod, PaymentRequested
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.payment import InMemoryPaymentStore

pytestmark = pytest.mark.unit

ADMIN = Principal("ops-1", Role.ADMIN)
OWNER = Principal("cust-1", Role.CUSTOMER)
OTHER_CUSTOMER = Principal("cust-2", Role.CUSTOMER)
MERCHANT = Principal("merchant-user", Role.MERCHANT, merchant_id="m-1")
GUEST_OF_ORD_1 = Principal("guest-1", Role.GUEST, order_id="ord-1")
GUEST_OF_ORD_2 = Principal("guest-2", Role.GUEST, order_id="ord-2")

PAY_1 = payment_id_for("ord-1")  # cust-1's
PAY_2 = payment_id_for("ord-2")  # cust-2's


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


def stored_payment(order_id: str, customer_id: str, provider_ref: str) -> Payment:
    request = PaymentRequested(
        order_id=order_id,
        customer_id=customer_id,
        amount_fen=500,
        method=PaymentMethod.ALIPAY,
        token="tok_secret",
    )
    payment, _ = Payment.authorize(
        request, ProviderResult(approved=True, provider_ref=provider_ref), datetime.now(UTC)
    )
    return payment


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = InMemoryPaymentStore()
    for payment in (stored_payment("ord-1", "cust-1", "ref-1"), stored_payment("ord-2", "cust-2", "ref-2")):
        store.payments[payment.payment_id] = payment
    app = create_app("payment", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def listed(client: httpx.AsyncClient, order_id: str, caller: Principal) -> list[dict[str, object]]:
    response = await client.get("/v1/payments", params={"order_id": order_id}, headers=bearer(caller))
    assert response.status_code == 200
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def test_list_by_order_shows_the_payment_without_the_provider_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", params={"order_id": "ord-1"}, headers=bearer(ADMIN))

    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (
        item["order_id"],
        item["customer_id"],
        item["status"],
        item["amount_fen"],
        item["provider_ref"],
    ) == (
        "ord-1",
        "cust-1",
        "authorized",
        500,
        "ref-1",
    )
    assert "tok_secret" not in response.text


async def test_list_for_an_unknown_order_is_empty(client: httpx.AsyncClient) -> None:
    assert await listed(client, "nope", ADMIN) == []


async def test_list_requires_an_order_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", headers=bearer(ADMIN))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "order_id"


async def test_get_by_id_shows_what_the_list_shows(client: httpx.AsyncClient) -> None:
    [item] = await listed(client, "ord-1", ADMIN)

    response = await client.get(f"/v1/payments/{item['payment_id']}", headers=bearer(ADMIN))

    assert response.status_code == 200
    assert response.json() == item


async def test_an_unknown_payment_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments/pay_missing", headers=bearer(ADMIN))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payment-not-found")


async def test_a_malformed_payment_id_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments/bad id!", headers=bearer(ADMIN))

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["location"]) == ("payment_id", "path")


@pytest.mark.parametrize(
    ("method_path", "params"),
    [(f"/v1/payments/{PAY_1}", {}), ("/v1/payments", {"order_id": "ord-1"})],
)
async def test_without_a_token_every_route_is_401(
    client: httpx.AsyncClient, method_path: str, params: dict[str, str]
) -> None:
    response = await client.get(method_path, params=params)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_token_that_does_not_verify_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/payments/{PAY_1}", headers={"Authorization": "Bearer not-a-jwt"})

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method_path", "params"),
    [(f"/v1/payments/{PAY_1}", {}), ("/v1/payments", {"order_id": "ord-1"})],
)
async def test_a_merchant_is_refused_payment_details_with_403(
    client: httpx.AsyncClient, method_path: str, params: dict[str, str]
) -> None:
    response = await client.get(method_path, params=params, headers=bearer(MERCHANT))

    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")


async def test_admin_reads_every_customers_payment(client: httpx.AsyncClient) -> None:
    for payment_id in (PAY_1, PAY_2):
        assert (await client.get(f"/v1/payments/{payment_id}", headers=bearer(ADMIN))).status_code == 200
    assert [p["order_id"] for p in await listed(client, "ord-2", ADMIN)] == ["ord-2"]


async def test_a_customer_reads_their_own_payment(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/payments/{PAY_1}", headers=bearer(OWNER))

    assert response.status_code == 200
    assert response.json()["customer_id"] == "cust-1"
    assert [p["payment_id"] for p in await listed(client, "ord-1", OWNER)] == [PAY_1]


async def test_another_customers_payment_is_404_exactly_like_a_missing_one(client: httpx.AsyncClient) -> None:
    someone_elses = await client.get(f"/v1/payments/{PAY_1}", headers=bearer(OTHER_CUSTOMER))
    missing = await client.get("/v1/payments/pay_missing", headers=bearer(OTHER_CUSTOMER))

    assert someone_elses.status_code == missing.status_code == 404
    assert {k: v for k, v in someone_elses.json().items() if k not in ("detail", "instance")} == {
        k: v for k, v in missing.json().items() if k not in ("detail", "instance")
    }
    assert "cust-1" not in someone_elses.text and "ref-1" not in someone_elses.text


async def test_listing_another_customers_order_is_empty(client: httpx.AsyncClient) -> None:
    assert await listed(client, "ord-1", OTHER_CUSTOMER) == []


async def test_a_guest_reads_the_payment_of_its_order_only(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/payments/{PAY_1}", headers=bearer(GUEST_OF_ORD_1))).status_code == 200
    assert [p["order_id"] for p in await listed(client, "ord-1", GUEST_OF_ORD_1)] == ["ord-1"]

    assert (await client.get(f"/v1/payments/{PAY_1}", headers=bearer(GUEST_OF_ORD_2))).status_code == 404
    assert await listed(client, "ord-1", GUEST_OF_ORD_2) == []


async def test_the_openapi_document_lists_every_route_with_its_errors_and_examples(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    listing = document["paths"]["/v1/payments"]["get"]
    one = document["paths"]["/v1/payments/{payment_id}"]["get"]
    assert {"200", "401", "403", "422"} <= listing["responses"].keys()
    assert {"200", "401", "403", "404", "422"} <= one["responses"].keys()
    for status in ("401", "403", "404"):
        problem = one["responses"][status]["content"]["application/problem+json"]
        assert problem["example"]["status"] == int(status)
    assert listing["security"] == one["security"] == [{"HTTPBearer": []}]
    schemas = document["components"]["schemas"]
    for model in ("PaymentOut", "PaymentList", "TimelineOut"):
        assert schemas[model]["examples"], model
    assert (await client.get("/docs")).status_code == 200

"""Products' catalog details, back-in-stock subscriptions and low-stock notices, over the API and the
order consumer with the in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router
from services.inventory.domain import BACK_IN_STOCK_CHUNK, Subscription
from services.inventory.handlers import Inventory, handle_batch
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import BackInStock, LowStock, PaymentMethod, ProductUpserted, decode_data
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import cancelled, line, placed
from tests.unit.samples import delivery

pytestmark = pytest.mark.unit

ISSUER = TokenIssuer(SharedSettings())


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


ADMIN = bearer(Principal("admin-1", Role.ADMIN))
TEA_HOUSE = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))
LI = bearer(Principal("cust-li", Role.CUSTOMER))
WANG = bearer(Principal("cust-wang", Role.CUSTOMER))
TEA = {
    "name": "Longjing",
    "merchant_id": "m-1",
    "price_fen": 16800,
    "available": 0,
    "description": "Picked before Qingming",
    "category": "tea/green",
    "attributes": {"origin": "Hangzhou", "weight": "250g"},
    "payment_methods": ["alipay", "wechat_pay"],
    "low_stock_threshold": 3,
}


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def service(store: InMemoryInventoryStore) -> Inventory:
    return Inventory(store=store, reservation_ttl=timedelta(minutes=15))


@pytest.fixture
async def client(service: Inventory, store: InMemoryInventoryStore) -> AsyncIterator[httpx.AsyncClient]:
    """Merchant m-1 (wallets only) and its sold-out product SKU-TEA."""
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        merchant = {"name": "West Lake Tea", "payment_methods": ["wechat_pay", "alipay"]}
        assert (await client.put("/v1/merchants/m-1", json=merchant, headers=ADMIN)).status_code == 201
        created = await client.put("/v1/products/SKU-TEA", json=TEA, headers=TEA_HOUSE)
        assert created.status_code == 201, created.text
        store.outbox.clear()
        yield client


def announced(store: InMemoryInventoryStore, kind: type[Any]) -> list[Any]:
    return [event for envelope in store.outbox if isinstance(event := decode_data(envelope), kind)]


async def restock(client: httpx.AsyncClient, add: int) -> dict[str, Any]:
    response = await client.post("/v1/products/SKU-TEA/stock", json={"add": add}, headers=TEA_HOUSE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- catalog details ---------------------------------------------------------------------------------


async def test_a_products_details_are_stored_shown_and_announced(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    edited = await client.put(
        "/v1/products/SKU-TEA", json={**TEA, "description": "Spring 2026"}, headers=TEA_HOUSE
    )

    assert edited.status_code == 200, edited.text
    shown = (await client.get("/v1/products/SKU-TEA")).json()
    assert {k: shown[k] for k in ("description", "category", "attributes", "payment_methods")} == {
        "description": "Spring 2026",
        "category": "tea/green",
        "attributes": {"origin": "Hangzhou", "weight": "250g"},
        "payment_methods": ["wechat_pay", "alipay"],
    }
    assert shown["low_stock_threshold"] == 3
    [event] = announced(store, ProductUpserted)
    assert (event.description, event.category, event.attributes) == (
        "Spring 2026",
        "tea/green",
        {"origin": "Hangzhou", "weight": "250g"},
    )
    assert event.payment_methods == [PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "Tea/Green"}, "category"),
        ({"category": "tea//green"}, "category"),
        ({"category": "a/b/c/d/e/f"}, "category"),
        ({"attributes": {f"a{n}": "x" for n in range(21)}}, "attributes"),
        ({"attributes": {"origin": "   "}}, "attributes.origin"),
        ({"attributes": {"origin": "x" * 201}}, "attributes.origin"),
        ({"description": "x" * 2001}, "description"),
        ({"payment_methods": ["bank_card"]}, "payment_methods"),
        ({"payment_methods": ["alipay", "alipay"]}, "payment_methods"),
        ({"low_stock_threshold": -1}, "low_stock_threshold"),
        ({"low_stock_threshold": "3"}, "low_stock_threshold"),
    ],
)
async def test_bad_details_are_refused_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, store: InMemoryInventoryStore, change: dict[str, Any], field: str
) -> None:
    before = (await client.get("/v1/products/SKU-TEA")).json()

    response = await client.put("/v1/products/SKU-TEA", json={**TEA, **change}, headers=TEA_HOUSE)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(error["field"].startswith(field) for error in response.json()["errors"]), response.json()
    assert (await client.get("/v1/products/SKU-TEA")).json() == before
    assert store.outbox == []


async def test_a_method_the_merchant_does_not_accept_is_named_in_the_refusal(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put(
        "/v1/products/SKU-TEA", json={**TEA, "payment_methods": ["alipay", "bank_card"]}, headers=TEA_HOUSE
    )

    assert response.status_code == 422
    assert "does not accept bank_card" in response.json()["detail"]


# --- back in stock -------------------------------------------------------------------------------------


async def test_subscribing_is_idempotent_and_for_customers_only(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)
    again = await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)
    by_merchant = await client.post("/v1/products/SKU-TEA/subscriptions", headers=TEA_HOUSE)
    unknown = await client.post("/v1/products/SKU-NONE/subscriptions", headers=LI)
    anonymous = await client.post("/v1/products/SKU-TEA/subscriptions")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == {"sku": "SKU-TEA", "customer_id": "cust-li"}
    assert (by_merchant.status_code, unknown.status_code, anonymous.status_code) == (403, 404, 401)


async def test_a_product_in_stock_cannot_be_subscribed_to(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await restock(client, 5)

    response = await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)

    assert response.status_code == 409
    assert response.json()["type"].endswith("/product-in-stock")
    assert "5 can be ordered now" in response.json()["detail"]
    async with store.transaction("test") as tx:
        assert await tx.subscriptions("SKU-TEA") == []


async def test_a_restock_from_nothing_tells_each_subscriber_once_and_ends_their_subscriptions(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    for customer in (LI, WANG, LI):
        await client.post("/v1/products/SKU-TEA/subscriptions", headers=customer)

    await restock(client, 5)
    await restock(client, 5)  # in stock already: nobody is waiting any more

    [event] = announced(store, BackInStock)
    assert event == BackInStock(
        sku="SKU-TEA", name="Longjing", merchant_id="m-1", available=5, customer_ids=["cust-li", "cust-wang"]
    )
    async with store.transaction("test") as tx:
        assert await tx.subscriptions("SKU-TEA") == []


async def test_an_unsubscribed_customer_is_not_told(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)
    await client.post("/v1/products/SKU-TEA/subscriptions", headers=WANG)

    gone = await client.delete("/v1/products/SKU-TEA/subscriptions", headers=LI)
    gone_again = await client.delete("/v1/products/SKU-TEA/subscriptions", headers=LI)
    await restock(client, 1)

    assert (gone.status_code, gone_again.status_code) == (204, 204)
    [event] = announced(store, BackInStock)
    assert event.customer_ids == ["cust-wang"]


async def test_many_subscribers_are_told_in_chunks_with_ids_from_their_subscriptions(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    count = 2 * BACK_IN_STOCK_CHUNK + 7
    async with store.transaction("test") as tx:
        for n in range(count):
            await tx.subscribe(Subscription("SKU-TEA", f"cust-{n:05d}", f"sub-{n}"))

    await restock(client, 1)

    events = announced(store, BackInStock)
    assert [len(e.customer_ids) for e in events] == [BACK_IN_STOCK_CHUNK, BACK_IN_STOCK_CHUNK, 7]
    assert sorted(c for e in events for c in e.customer_ids) == [f"cust-{n:05d}" for n in range(count)]
    assert len({envelope.id for envelope in store.outbox}) == len(store.outbox)


async def test_a_subscriber_who_subscribes_again_is_told_again_after_the_next_sell_out(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)
    await restock(client, 2)
    await restock(client, -2)
    await client.post("/v1/products/SKU-TEA/subscriptions", headers=LI)
    await restock(client, 2)

    told = [e for e in store.outbox if isinstance(decode_data(e), BackInStock)]
    assert len(told) == 2
    assert told[0].id != told[1].id


# --- low stock -----------------------------------------------------------------------------------------


async def test_low_stock_is_announced_once_per_dip_to_the_threshold(
    client: httpx.AsyncClient, service: Inventory, store: InMemoryInventoryStore
) -> None:
    await restock(client, 6)
    await handle_batch(service, [delivery(placed("o-1", line("SKU-TEA", 2)))])  # 4: above 3
    await handle_batch(service, [delivery(placed("o-2", line("SKU-TEA", 1)))])  # 3: at the threshold
    await handle_batch(service, [delivery(placed("o-3", line("SKU-TEA", 1)))])  # 2: still low, told already

    assert announced(store, LowStock) == [
        LowStock(sku="SKU-TEA", name="Longjing", merchant_id="m-1", available=3, threshold=3)
    ]

    await handle_batch(service, [delivery(cancelled("o-1")), delivery(cancelled("o-2"))])  # 5: above again
    await restock(client, -2)  # a correction down to 3: a new dip

    assert [e.available for e in announced(store, LowStock)] == [3, 3]


async def test_a_product_without_a_threshold_is_never_low(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.put("/v1/products/SKU-TEA", json={**TEA, "low_stock_threshold": None}, headers=TEA_HOUSE)

    await restock(client, 1)

    assert announced(store, LowStock) == []

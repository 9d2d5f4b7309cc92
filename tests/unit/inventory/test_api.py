"""The catalog API over the in-memory store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from services.inventory.api import build_router
from services.inventory.handlers import Inventory
from shared.contracts import ProductUpserted, decode_data
from shared.http import create_app
from tests.twins.inventory import InMemoryInventoryStore

pytestmark = pytest.mark.unit

TEA = {"name": "Longjing", "merchant_id": "m-1", "price_fen": 8800, "available": 12}


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def client(store: InMemoryInventoryStore) -> TestClient:
    app = create_app("inventory", readiness={})
    app.include_router(build_router(Inventory(store=store, reservation_ttl=timedelta(minutes=15))))
    return TestClient(app)


def test_merchants_are_created_once(client: TestClient) -> None:
    body = {"merchant_id": "m-1", "name": "West Lake Tea"}

    assert client.post("/v1/merchants", json=body).status_code == 201
    assert client.post("/v1/merchants", json=body).status_code == 200
    taken = client.post("/v1/merchants", json={**body, "name": "Other"})
    assert taken.status_code == 409
    assert taken.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/merchants").json() == {"items": [body]}


def test_put_creates_a_product_lists_it_and_announces_it(
    client: TestClient, store: InMemoryInventoryStore
) -> None:
    client.post("/v1/merchants", json={"merchant_id": "m-1", "name": "West Lake Tea"})

    put = client.put("/v1/products/SKU-TEA", json=TEA, headers={"X-Correlation-ID": "corr-1"})

    assert put.status_code == 200
    expected = {
        "sku": "SKU-TEA",
        "name": "Longjing",
        "price_fen": 8800,
        "available": 12,
        "merchant_id": "m-1",
        "kind": "physical",
    }
    assert expected.items() <= put.json().items()
    assert put.json()["reserved"] == 0
    assert client.get("/v1/products/SKU-TEA").json() == put.json()
    assert client.get("/v1/products").json() == {"items": [put.json()]}
    assert client.get("/v1/products", params={"merchant_id": "m-2"}).json() == {"items": []}
    [envelope] = store.outbox
    assert envelope.correlation_id == "corr-1"
    assert isinstance(decode_data(envelope), ProductUpserted)


def test_client_errors_are_problems(client: TestClient) -> None:
    unknown = client.get("/v1/products/NOPE")
    assert (unknown.status_code, unknown.json()["type"]) == (
        404,
        "https://errors.order-platform.example/product-not-found",
    )
    no_merchant = client.put("/v1/products/SKU-TEA", json=TEA)
    assert (no_merchant.status_code, no_merchant.json()["title"]) == (422, "Unknown merchant")
    negative = client.put("/v1/products/SKU-TEA", json={**TEA, "available": -1})
    assert negative.status_code == 422
    assert negative.headers["content-type"] == "application/problem+json"
    assert client.put("/v1/products/SKU-TEA", json={**TEA, "kind": "digital"}).status_code == 422

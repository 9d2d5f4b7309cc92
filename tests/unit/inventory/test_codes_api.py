"""Uploading a virtual product's codes over HTTP: text/plain, all or nothing, never echoed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router
from services.inventory.domain import MAX_CODES_PER_UPLOAD
from services.inventory.handlers import Inventory
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore

pytestmark = pytest.mark.unit

ISSUER = TokenIssuer(SharedSettings())
PROBLEM = "application/problem+json"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


ADMIN = bearer(Principal("admin-1", Role.ADMIN))
GIFT_SHOP = bearer(Principal("u-gift", Role.MERCHANT, merchant_id="m-1"))
OTHER_SHOP = bearer(Principal("u-other", Role.MERCHANT, merchant_id="m-2"))
SHOPPER = bearer(Principal("c-1", Role.CUSTOMER))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """Merchants m-1 and m-2; m-1's virtual GIFT (no codes yet) and physical TEA (10 units)."""
    service = Inventory(store=InMemoryInventoryStore(), reservation_ttl=timedelta(minutes=15))
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for merchant_id in ("m-1", "m-2"):
            made = await client.post(
                "/v1/merchants", json={"merchant_id": merchant_id, "name": merchant_id}, headers=ADMIN
            )
            assert made.status_code == 201, made.text
        for sku, kind, available in (("GIFT", "virtual", 0), ("TEA", "physical", 10)):
            body = {"name": sku, "merchant_id": "m-1", "price_fen": 100, "kind": kind, "available": available}
            assert (await client.put(f"/v1/products/{sku}", json=body, headers=ADMIN)).status_code == 201
        yield client


async def upload(client: httpx.AsyncClient, text: str, sku: str = "GIFT", **headers: str) -> httpx.Response:
    sent = {**TEXT, **(headers or GIFT_SHOP)}
    return await client.post(f"/v1/products/{sku}/codes", content=text.encode(), headers=sent)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://errors.order-platform.example/{code}"
    return body


async def available(client: httpx.AsyncClient, sku: str = "GIFT") -> int:
    found: int = (await client.get(f"/v1/products/{sku}")).json()["available"]
    return found


async def test_the_merchant_uploads_codes_and_is_told_the_count_never_the_codes(
    client: httpx.AsyncClient,
) -> None:
    added = await upload(client, "GIFT-AAAA-0001\n  GIFT-AAAA-0002  \n\n")

    assert added.status_code == 200, added.text
    assert added.json() == {"sku": "GIFT", "added": 2, "available": 2}
    assert "GIFT-AAAA" not in added.text
    assert await available(client) == 2


async def test_duplicates_refuse_the_whole_upload_naming_their_lines(client: httpx.AsyncClient) -> None:
    assert (await upload(client, "C-1\nC-2")).status_code == 200

    within = problem(await upload(client, "C-3\nC-4\nC-3"), 409, "duplicate-codes")
    pooled = problem(await upload(client, "C-5\n\nC-1\nC-2"), 409, "duplicate-codes")

    assert within["lines"] == [3]
    assert pooled["lines"] == [3, 4]
    assert "C-1" not in pooled["detail"]
    assert await available(client) == 2


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        pytest.param("\n \n", 422, "invalid-codes", id="none"),
        pytest.param(
            "\n".join(map(str, range(MAX_CODES_PER_UPLOAD + 1))), 422, "invalid-codes", id="too-many"
        ),
        pytest.param("X" * 201, 422, "invalid-codes", id="too-long"),
    ],
)
async def test_an_upload_that_is_no_list_of_codes_is_422(
    client: httpx.AsyncClient, text: str, status: int, code: str
) -> None:
    problem(await upload(client, text), status, code)

    assert await available(client) == 0


async def test_only_text_plain_is_taken(client: httpx.AsyncClient) -> None:
    as_json = {**GIFT_SHOP, "Content-Type": "application/json"}
    untyped = await client.post("/v1/products/GIFT/codes", content=b"C-1", headers=GIFT_SHOP)

    problem(await upload(client, '{"codes": "C-1"}', **as_json), 415, "unsupported-media-type")
    problem(untyped, 415, "unsupported-media-type")
    text_headers = {**TEXT, **GIFT_SHOP}
    not_utf8 = await client.post("/v1/products/GIFT/codes", content=b"\xff\xfe", headers=text_headers)
    problem(not_utf8, 422, "invalid-request")
    assert await available(client) == 0


async def test_codes_go_to_a_known_virtual_product_of_the_callers_merchant(client: httpx.AsyncClient) -> None:
    problem(await upload(client, "C-1", sku="GHOST"), 404, "product-not-found")
    problem(await upload(client, "C-1", sku="TEA"), 409, "not-virtual")
    problem(await upload(client, "C-1", **OTHER_SHOP), 403, "forbidden")
    problem(await upload(client, "C-1", **SHOPPER), 403, "forbidden")
    unsigned = await client.post("/v1/products/GIFT/codes", content=b"C-1", headers=TEXT)
    assert unsigned.status_code == 401

    assert (await upload(client, "C-1", **ADMIN)).status_code == 200
    assert await available(client) == 1


async def test_a_virtual_products_stock_is_not_added_by_hand(client: httpx.AsyncClient) -> None:
    restocked = await client.post("/v1/products/GIFT/stock", json={"add": 5}, headers=ADMIN)
    problem(restocked, 409, "stock-is-codes")
    created = await client.put(
        "/v1/products/GIFT-2",
        json={"name": "g", "merchant_id": "m-1", "price_fen": 1, "kind": "virtual", "available": 3},
        headers=ADMIN,
    )
    problem(created, 422, "invalid-request")
    assert await available(client) == 0

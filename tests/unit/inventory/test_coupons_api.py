"""The coupon API over the in-memory store: who may write and see a coupon, and what bad input gets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router
from services.inventory.handlers import Inventory, handle_batch, release_expired
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import CouponUpserted, decode_data
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import cancelled, confirmed, line, placed_with_coupon, rejected
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

ISSUER = TokenIssuer(SharedSettings())
PROBLEM = "application/problem+json"


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


ADMIN = bearer(Principal("admin-1", Role.ADMIN))
TEA_HOUSE = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))
POTTERY = bearer(Principal("u-pot", Role.MERCHANT, merchant_id="m-2"))
SHOPPER = bearer(Principal("c-1", Role.CUSTOMER))
COUPON: dict[str, Any] = {
    "merchant_id": "m-1",
    "discount": "percent",
    "value": 10,
    "min_spend_fen": 5000,
    "valid_from": (T0 - timedelta(days=1)).isoformat(),
    "valid_until": (T0 + timedelta(days=30)).isoformat(),
    "total_uses": 3,
}


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def service(store: InMemoryInventoryStore) -> Inventory:
    return Inventory(store=store, reservation_ttl=timedelta(minutes=15), clock=lambda: T0)


@pytest.fixture
async def client(service: Inventory, store: InMemoryInventoryStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for merchant_id in ("m-1", "m-2"):
            created = await client.post(
                "/v1/merchants", json={"merchant_id": merchant_id, "name": merchant_id}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
        tea = {"name": "Longjing", "merchant_id": "m-1", "price_fen": 8800, "available": 10}
        assert (await client.put("/v1/products/SKU-TEA", json=tea, headers=TEA_HOUSE)).status_code == 201
        store.outbox.clear()
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://errors.order-platform.example/{code}"
    return body


async def test_a_merchant_creates_and_edits_its_coupon_and_each_change_is_announced(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    created = await client.put("/v1/coupons/TEA10", json=COUPON, headers=TEA_HOUSE)
    edited = await client.put("/v1/coupons/TEA10", json={**COUPON, "active": False}, headers=TEA_HOUSE)

    assert created.status_code == 201, created.text
    assert edited.status_code == 200, edited.text
    assert (edited.json()["active"], edited.json()["left"], edited.json()["used"]) == (False, 3, 0)
    announced = [decode_data(envelope) for envelope in store.outbox]
    assert [(e.code, e.active) for e in announced if isinstance(e, CouponUpserted)] == [
        ("TEA10", True),
        ("TEA10", False),
    ]
    assert [envelope.subject for envelope in store.outbox] == ["TEA10", "TEA10"]


async def test_a_coupon_and_its_uses_are_seen_by_its_merchant_and_admins_only(
    client: httpx.AsyncClient, service: Inventory
) -> None:
    await client.put("/v1/coupons/TEA10", json=COUPON, headers=TEA_HOUSE)
    await handle_batch(service, [delivery(placed_with_coupon("o-1", line("SKU-TEA", 1), code="TEA10"))])

    seen = await client.get("/v1/coupons/TEA10", headers=TEA_HOUSE)
    listed = await client.get("/v1/coupons", params={"merchant_id": "m-1"}, headers=ADMIN)

    assert (seen.json()["left"], seen.json()["held"], seen.json()["used"]) == (2, 1, 0)
    assert [c["code"] for c in listed.json()["items"]] == ["TEA10"]
    assert_problem(await client.get("/v1/coupons/TEA10", headers=POTTERY), 404, "coupon-not-found")
    assert_problem(await client.get("/v1/coupons/TEA10", headers=SHOPPER), 404, "coupon-not-found")
    assert_problem(
        await client.get("/v1/coupons", params={"merchant_id": "m-1"}, headers=POTTERY), 403, "forbidden"
    )
    assert_problem(await client.get("/v1/coupons", headers=TEA_HOUSE), 403, "forbidden")
    assert (await client.get("/v1/coupons/TEA10")).status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": 0}, "value"),
        ({"value": 101}, "value"),
        ({"discount": "amount", "value": -5}, "value"),
        ({"valid_until": (T0 - timedelta(days=2)).isoformat()}, "valid_until"),
        ({"valid_from": "2026-11-25T12:00:00"}, "valid_from"),
        ({"total_uses": 0}, "total_uses"),
        ({"total_uses": True}, "total_uses"),
        ({"discount": "half"}, "discount"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_terms_are_refused_naming_the_field_and_nothing_is_written(
    client: httpx.AsyncClient, store: InMemoryInventoryStore, change: dict[str, Any], field: str
) -> None:
    refused = await client.put("/v1/coupons/TEA10", json={**COUPON, **change}, headers=TEA_HOUSE)

    body = assert_problem(refused, 422, "invalid-request")
    assert field in {error["field"].split(".")[-1] for error in body["errors"]}, body
    assert await store.get_coupon("TEA10") is None
    assert not store.outbox


async def test_a_bad_code_is_refused(client: httpx.AsyncClient) -> None:
    for code in ("ab", "tea10", "TEA 10", "-TEA", "X" * 33):
        response = await client.put(f"/v1/coupons/{code}", json=COUPON, headers=TEA_HOUSE)
        assert response.status_code in (404, 422), (code, response.text)
        assert response.headers["content-type"] == PROBLEM


async def test_a_code_another_merchant_has_is_refused_and_the_coupon_stays_its_owners(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.put("/v1/coupons/TEA10", json=COUPON, headers=TEA_HOUSE)
    store.outbox.clear()

    taken = await client.put("/v1/coupons/TEA10", json={**COUPON, "merchant_id": "m-2"}, headers=POTTERY)
    moved = await client.put("/v1/coupons/TEA10", json={**COUPON, "merchant_id": "m-2"}, headers=ADMIN)

    assert_problem(taken, 409, "coupon-code-taken")
    assert_problem(moved, 409, "coupon-code-taken")
    stored = await store.get_coupon("TEA10")
    assert stored is not None and stored.terms.merchant_id == "m-1"
    assert not store.outbox


async def test_only_the_merchant_or_an_admin_writes_its_coupons(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/v1/coupons/TEA10", json=COUPON, headers=POTTERY), 403, "forbidden")
    assert_problem(await client.put("/v1/coupons/TEA10", json=COUPON, headers=SHOPPER), 403, "forbidden")
    assert (await client.put("/v1/coupons/TEA10", json=COUPON)).status_code == 401
    unknown = await client.put("/v1/coupons/TEA10", json={**COUPON, "merchant_id": "m-9"}, headers=ADMIN)
    assert_problem(unknown, 422, "unknown-merchant")
    assert (await client.put("/v1/coupons/TEA10", json=COUPON, headers=ADMIN)).status_code == 201


async def test_total_uses_cannot_go_below_the_uses_used_and_held(
    client: httpx.AsyncClient, service: Inventory, store: InMemoryInventoryStore
) -> None:
    await client.put("/v1/coupons/TEA10", json=COUPON, headers=TEA_HOUSE)
    for n in (1, 2):
        order = placed_with_coupon(f"o-{n}", line("SKU-TEA", 1), code="TEA10", customer_id=f"c-{n}")
        await handle_batch(service, [delivery(order)])
    store.outbox.clear()

    refused = await client.put("/v1/coupons/TEA10", json={**COUPON, "total_uses": 1}, headers=TEA_HOUSE)
    lowered = await client.put("/v1/coupons/TEA10", json={**COUPON, "total_uses": 2}, headers=TEA_HOUSE)

    assert "2 held" in assert_problem(refused, 409, "coupon-uses-conflict")["detail"]
    assert (lowered.json()["left"], lowered.json()["held"]) == (0, 2)
    assert len(store.outbox) == 1


async def test_an_orders_use_goes_back_once_when_it_ends_and_when_its_reservation_expires(
    client: httpx.AsyncClient, service: Inventory, store: InMemoryInventoryStore
) -> None:
    await client.put("/v1/coupons/TEA10", json=COUPON, headers=TEA_HOUSE)
    for n in (1, 2, 3):
        order = placed_with_coupon(f"o-{n}", line("SKU-TEA", 1), code="TEA10", customer_id=f"c-{n}")
        await handle_batch(service, [delivery(order)])
    ended = cancelled("o-1")
    await handle_batch(service, [delivery(ended), delivery(rejected("o-1"))])
    await handle_batch(service, [delivery(ended)])
    await handle_batch(service, [delivery(confirmed("o-2", line("SKU-TEA", 1)))])

    uses = (await client.get("/v1/coupons/TEA10", headers=TEA_HOUSE)).json()
    assert (uses["left"], uses["held"], uses["used"]) == (1, 1, 1)

    service.clock = lambda: T0 + timedelta(hours=3)
    assert await release_expired(service) == 1
    uses = (await client.get("/v1/coupons/TEA10", headers=TEA_HOUSE)).json()
    assert (uses["left"], uses["held"], uses["used"]) == (2, 0, 1)

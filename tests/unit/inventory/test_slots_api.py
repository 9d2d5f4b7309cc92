"""A merchant's slots of a service product over the API and the in-memory store: offered, listed,
booked, closed and refused with a clear problem when they cannot be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router
from services.inventory.handlers import Inventory, handle_batch
from shared.auth import TokenVerifier
from shared.contracts import OrderLine, ProductKind, ProductUpserted, ServiceSlot, decode_data
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import cancelled, confirmed, placed
from tests.unit.inventory.test_api import ADMIN, POTTERY, TEA, TEA_HOUSE, assert_problem
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)
LESSON = {"name": "Tea ceremony lesson", "merchant_id": "m-1", "price_fen": 20000, "kind": "service"}
SLOTS = "/v1/products/SKU-LESSON/slots"


def times(starts_in: timedelta = HOUR, lasts: timedelta = HOUR, capacity: int = 3) -> dict[str, Any]:
    return {
        "starts_at": (T0 + starts_in).isoformat(),
        "ends_at": (T0 + starts_in + lasts).isoformat(),
        "capacity": capacity,
    }


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def service(store: InMemoryInventoryStore) -> Inventory:
    return Inventory(store=store, reservation_ttl=timedelta(minutes=15), clock=lambda: T0)


@pytest.fixture
async def client(service: Inventory, store: InMemoryInventoryStore) -> AsyncIterator[httpx.AsyncClient]:
    """Merchant m-1 (and m-2) with the service SKU-LESSON and the physical SKU-TEA."""
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for merchant_id in ("m-1", "m-2"):
            created = await client.post(
                "/v1/merchants", json={"merchant_id": merchant_id, "name": merchant_id}, headers=ADMIN
            )
            assert created.status_code == 201, created.text
        for sku, body in (("SKU-LESSON", LESSON), ("SKU-TEA", TEA)):
            response = await client.put(f"/v1/products/{sku}", json=body, headers=TEA_HOUSE)
            assert response.status_code == 201, response.text
        store.outbox.clear()
        yield client


def announced(store: InMemoryInventoryStore) -> list[ProductUpserted]:
    return [event for envelope in store.outbox if isinstance(event := decode_data(envelope), ProductUpserted)]


async def slots(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(SLOTS)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def lesson(slot_id: str, quantity: int = 1) -> OrderLine:
    return OrderLine(
        sku="SKU-LESSON",
        name="lesson",
        merchant_id="m-1",
        kind=ProductKind.SERVICE,
        quantity=quantity,
        unit_price_fen=20000,
        slot_id=slot_id,
    )


async def test_a_merchant_offers_slots_listed_earliest_first_and_announced_with_the_product(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    later = await client.put(f"{SLOTS}/tue-10", json=times(starts_in=2 * HOUR), headers=TEA_HOUSE)
    sooner = await client.put(f"{SLOTS}/mon-10", json=times(capacity=2), headers=ADMIN)

    assert (later.status_code, sooner.status_code) == (201, 201)
    assert sooner.json() == {**times(capacity=2), "slot_id": "mon-10", "available": 2, "reserved": 0} | {
        "starts_at": sooner.json()["starts_at"],
        "ends_at": sooner.json()["ends_at"],
    }
    assert [(s["slot_id"], s["capacity"], s["available"]) for s in await slots(client)] == [
        ("mon-10", 2, 2),
        ("tue-10", 3, 3),
    ]
    product = (await client.get("/v1/products/SKU-LESSON")).json()
    assert (product["kind"], product["available"], product["reserved"]) == ("service", 5, 0)
    last = announced(store)[-1]
    assert last.slots == [
        ServiceSlot(slot_id="mon-10", starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR),
        ServiceSlot(slot_id="tue-10", starts_at=T0 + 2 * HOUR, ends_at=T0 + 3 * HOUR),
    ]


async def test_bookings_take_seats_a_cancelled_one_gives_its_seat_back_and_capacity_cannot_drop_below_them(
    client: httpx.AsyncClient, service: Inventory, store: InMemoryInventoryStore
) -> None:
    assert (await client.put(f"{SLOTS}/mon-10", json=times(capacity=3), headers=TEA_HOUSE)).status_code == 201
    await handle_batch(service, [delivery(placed(f"o-{n}", lesson("mon-10"))) for n in range(3)])
    await handle_batch(service, [delivery(confirmed("o-0", lesson("mon-10")))])
    assert [(s["available"], s["reserved"]) for s in await slots(client)] == [(0, 2)]

    cut = await client.put(f"{SLOTS}/mon-10", json=times(capacity=2), headers=TEA_HOUSE)
    moved = await client.put(f"{SLOTS}/mon-10", json=times(starts_in=3 * HOUR), headers=TEA_HOUSE)
    removed = await client.delete(f"{SLOTS}/mon-10", headers=TEA_HOUSE)

    assert (
        "3 seat(s) taken (2 held by orders not paid yet): its capacity cannot go below 3"
        in (assert_problem(cut, 409, "slot-conflict")["detail"])
    )
    assert "times cannot move" in assert_problem(moved, 409, "slot-conflict")["detail"]
    assert "set its capacity to 3" in assert_problem(removed, 409, "slot-conflict")["detail"]
    await handle_batch(service, [delivery(cancelled("o-1"))])
    assert [(s["available"], s["reserved"]) for s in await slots(client)] == [(1, 1)]
    closed = await client.put(f"{SLOTS}/mon-10", json=times(capacity=2), headers=TEA_HOUSE)
    assert closed.status_code == 200, closed.text
    assert (closed.json()["capacity"], closed.json()["available"], closed.json()["reserved"]) == (2, 0, 1)


async def test_a_slot_nobody_booked_is_removed_and_announced_gone(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.put(f"{SLOTS}/mon-10", json=times(), headers=TEA_HOUSE)
    await client.put(f"{SLOTS}/tue-10", json=times(starts_in=2 * HOUR), headers=TEA_HOUSE)

    removed = await client.delete(f"{SLOTS}/mon-10", headers=TEA_HOUSE)
    again = await client.delete(f"{SLOTS}/mon-10", headers=TEA_HOUSE)

    assert removed.status_code == 204, removed.text
    assert_problem(again, 404, "slot-not-found")
    assert [s["slot_id"] for s in await slots(client)] == ["tue-10"]
    assert [s.slot_id for s in announced(store)[-1].slots] == ["tue-10"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(times(lasts=-HOUR), "ends_at", id="ends-before-it-starts"),
        pytest.param(times(lasts=timedelta(0)), "ends_at", id="ends-as-it-starts"),
        pytest.param(times(starts_in=-HOUR), "starts_at", id="in-the-past"),
        pytest.param(times(capacity=-1), "capacity", id="capacity-below-zero"),
        pytest.param(times(capacity=10_001), "capacity", id="capacity-above-the-limit"),
        pytest.param({**times(), "capacity": "3"}, "capacity", id="capacity-a-string"),
        pytest.param({**times(), "starts_at": "2026-11-26T10:00:00"}, "starts_at", id="no-time-zone"),
        pytest.param({**times(), "seats": 3}, "seats", id="an-unknown-field"),
    ],
)
async def test_a_slot_nobody_could_book_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, store: InMemoryInventoryStore, body: dict[str, Any], field: str
) -> None:
    response = await client.put(f"{SLOTS}/mon-10", json=body, headers=TEA_HOUSE)

    problem = assert_problem(response, 422)
    assert field in [error["field"].split(".")[-1] for error in problem["errors"]], problem
    assert await slots(client) == []
    assert announced(store) == []


async def test_slots_belong_to_service_products_only_and_to_their_merchant(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    on_tea = await client.put("/v1/products/SKU-TEA/slots/mon-10", json=times(), headers=TEA_HOUSE)
    listed = await client.get("/v1/products/SKU-TEA/slots")
    removed = await client.delete("/v1/products/SKU-TEA/slots/mon-10", headers=TEA_HOUSE)
    by_another = await client.put(f"{SLOTS}/mon-10", json=times(), headers=POTTERY)
    anonymous = await client.put(f"{SLOTS}/mon-10", json=times())
    unknown = await client.put("/v1/products/SKU-NONE/slots/mon-10", json=times(), headers=ADMIN)

    for refused in (on_tea, listed, removed):
        assert "only a service" in assert_problem(refused, 409, "not-a-service")["detail"]
    assert_problem(by_another, 403, "forbidden")
    assert_problem(anonymous, 401)
    assert_problem(unknown, 404, "product-not-found")
    assert await slots(client) == []
    assert announced(store) == []


async def test_a_services_stock_is_its_slots_not_units(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    with_units = await client.put(
        "/v1/products/SKU-CLASS", json={**LESSON, "available": 5}, headers=TEA_HOUSE
    )
    restock = await client.post("/v1/products/SKU-LESSON/stock", json={"add": 5}, headers=TEA_HOUSE)
    await client.put(f"{SLOTS}/mon-10", json=times(), headers=TEA_HOUSE)
    to_physical = await client.put(
        "/v1/products/SKU-LESSON", json={**LESSON, "kind": "physical"}, headers=TEA_HOUSE
    )
    to_service = await client.put("/v1/products/SKU-TEA", json={**TEA, "kind": "service"}, headers=TEA_HOUSE)
    renamed = await client.put(
        "/v1/products/SKU-LESSON", json={**LESSON, "name": "Lesson"}, headers=TEA_HOUSE
    )

    assert_problem(with_units, 422)
    assert_problem(restock, 409, "stock-is-in-slots")
    assert "remove them" in assert_problem(to_physical, 409, "kind-change-refused")["detail"]
    assert "10 unit(s)" in assert_problem(to_service, 409, "kind-change-refused")["detail"]
    assert renamed.status_code == 200, renamed.text
    # An edit of a service announces its slots again: the gateway's replica keeps them.
    assert [s.slot_id for s in announced(store)[-1].slots] == ["mon-10"]

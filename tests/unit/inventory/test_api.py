"""The catalog API over the in-memory store: who may write what, and what bad input gets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.inventory.api import build_router
from services.inventory.domain import MAX_PRICE_FEN, MAX_STOCK
from services.inventory.handlers import Inventory, handle_batch
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import MerchantUpserted, PriceTier, ProductUpserted, decode_data
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore
from tests.unit.inventory.factories import confirmed, line, placed
from tests.unit.samples import delivery

pytestmark = pytest.mark.unit

ISSUER = TokenIssuer(SharedSettings())
TEA = {"name": "Longjing", "merchant_id": "m-1", "price_fen": 8800, "available": 10}
PROBLEM = "application/problem+json"


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


ADMIN = bearer(Principal("admin-1", Role.ADMIN))
TEA_HOUSE = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))
POTTERY = bearer(Principal("u-pot", Role.MERCHANT, merchant_id="m-2"))
SHOPPER = bearer(Principal("c-1", Role.CUSTOMER))


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def service(store: InMemoryInventoryStore) -> Inventory:
    return Inventory(store=store, reservation_ttl=timedelta(minutes=15))


@pytest.fixture
async def client(service: Inventory) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
async def catalog(client: httpx.AsyncClient, store: InMemoryInventoryStore) -> httpx.AsyncClient:
    """Merchants m-1 and m-2, and m-1's product SKU-TEA with 10 units."""
    for merchant_id in ("m-1", "m-2"):
        created = await client.post(
            "/v1/merchants", json={"merchant_id": merchant_id, "name": merchant_id}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
    assert (await client.put("/v1/products/SKU-TEA", json=TEA, headers=TEA_HOUSE)).status_code == 201
    store.outbox.clear()
    return client


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["type"] == f"https://errors.order-platform.example/{code}"
    return body


async def product(client: httpx.AsyncClient, sku: str = "SKU-TEA") -> dict[str, Any]:
    response = await client.get(f"/v1/products/{sku}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stock(client: httpx.AsyncClient, sku: str = "SKU-TEA") -> tuple[int, int]:
    """(available, reserved) of `sku` as the API shows it."""
    found = await product(client, sku)
    return found["available"], found["reserved"]


# --- merchants -----------------------------------------------------------------------------------


REGISTRATION = {
    "merchant_id": "m-1",
    "name": "West Lake Tea",
    "payment_methods": ["alipay", "wechat_pay"],
    "licence_number": "91330106MA2B3C4D5E",
    "contact": "tea@westlake.example",
    "webhook_url": "https://westlake.example/hooks",
}


async def test_a_merchant_registers_pending_once_and_is_announced_without_its_contact(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    created = await client.post("/v1/merchants", json=REGISTRATION, headers=TEA_HOUSE)
    again = await client.post("/v1/merchants", json=REGISTRATION, headers=ADMIN)
    taken = await client.post("/v1/merchants", json={**REGISTRATION, "name": "Other"}, headers=ADMIN)

    assert created.status_code == 201, created.text
    assert (again.status_code, again.json()) == (200, created.json())
    assert "PUT /v1/merchants/m-1" in assert_problem(taken, 409, "merchant-exists")["detail"]
    shown = created.json()
    assert (shown["status"], shown["contact"], shown["payment_methods"]) == (
        "PENDING",
        "tea@westlake.example",
        ["wechat_pay", "alipay"],
    )
    assert [(h["action"], h["status"], h["by"]) for h in shown["history"]] == [
        ("register", "PENDING", "u-tea")
    ]
    assert (await client.get("/v1/merchants/m-1", headers=TEA_HOUSE)).json() == shown
    assert (await client.get("/v1/merchants", headers=ADMIN)).json() == {"items": [shown]}
    assert_problem(await client.get("/v1/merchants/m-404", headers=ADMIN), 404, "merchant-not-found")
    [announced] = [decode_data(envelope) for envelope in store.outbox]
    assert announced == MerchantUpserted(
        merchant_id="m-1",
        name="West Lake Tea",
        payment_methods=["wechat_pay", "alipay"],
        status="PENDING",
        webhook_url="https://westlake.example/hooks",
    )
    assert "tea@westlake.example" not in store.outbox[0].model_dump_json()


async def test_an_admin_creating_a_merchant_without_a_licence_vouches_for_it(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/v1/merchants", json={"merchant_id": "m-1", "name": "Tea"}, headers=ADMIN)
    on_behalf = await client.post("/v1/merchants", json={**REGISTRATION, "merchant_id": "m-2"}, headers=ADMIN)

    assert created.json()["payment_methods"] == ["bank_card", "wechat_pay", "alipay"]
    assert (created.json()["status"], created.json()["history"][0]["action"]) == (
        "APPROVED",
        "create_approved",
    )
    assert on_behalf.json()["status"] == "PENDING"


async def test_registration_needs_the_merchant_itself_with_its_vetting_details(
    client: httpx.AsyncClient,
) -> None:
    body = {"merchant_id": "m-1", "name": "West Lake Tea"}

    assert_problem(await client.post("/v1/merchants", json=REGISTRATION), 401, "unauthenticated")
    assert_problem(await client.post("/v1/merchants", json=REGISTRATION, headers=POTTERY), 403, "forbidden")
    assert_problem(await client.post("/v1/merchants", json=REGISTRATION, headers=SHOPPER), 403, "forbidden")
    incomplete = assert_problem(await client.post("/v1/merchants", json=body, headers=TEA_HOUSE), 422)
    assert [e["field"] for e in incomplete["errors"]] == ["licence_number", "contact"]
    assert (await client.get("/v1/merchants", headers=ADMIN)).json() == {"items": []}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("contact", "not a contact"),
        ("contact", "12"),
        ("licence_number", "LIC 1; drop"),
        ("webhook_url", "http://westlake.example/hooks"),
        ("webhook_url", "ftp://westlake.example/hooks"),
        ("webhook_url", "https://user:secret@westlake.example/hooks"),
        ("webhook_url", "https://"),
    ],
)
async def test_bad_vetting_details_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, store: InMemoryInventoryStore, field: str, value: str
) -> None:
    refused = assert_problem(
        await client.post("/v1/merchants", json={**REGISTRATION, field: value}, headers=TEA_HOUSE), 422
    )

    assert [e["field"] for e in refused["errors"]] == [field]
    if field == "contact":
        assert value not in str(refused)
    assert store.outbox == []


async def test_an_admin_approves_rejects_suspends_and_reinstates_in_turn(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.post("/v1/merchants", json=REGISTRATION, headers=TEA_HOUSE)
    await client.post("/v1/merchants", json={**REGISTRATION, "merchant_id": "m-2"}, headers=POTTERY)

    async def decide(merchant_id: str, action: str, reason: str | None = None) -> httpx.Response:
        body = {} if reason is None else {"reason": reason}
        return await client.post(f"/v1/merchants/{merchant_id}/{action}", json=body, headers=ADMIN)

    assert (await decide("m-1", "approve")).json()["status"] == "APPROVED"
    suspend_conflict = assert_problem(await decide("m-1", "approve"), 409, "merchant-status-conflict")
    assert suspend_conflict["current_status"] == "APPROVED"
    assert "m-1 is APPROVED" in suspend_conflict["detail"]
    assert_problem(await decide("m-1", "suspend"), 422, "invalid-request")
    assert_problem(await decide("m-1", "suspend", ""), 422, "invalid-request")
    suspended = (await decide("m-1", "suspend", "counterfeit goods")).json()
    assert (suspended["status"], suspended["reason"]) == ("SUSPENDED", "counterfeit goods")
    assert_problem(await decide("m-1", "reject", "late"), 409, "merchant-status-conflict")
    assert (await decide("m-1", "reinstate")).json()["status"] == "APPROVED"
    rejected = (await decide("m-2", "reject", "licence expired")).json()
    assert (rejected["status"], rejected["reason"]) == ("REJECTED", "licence expired")
    assert_problem(await decide("m-2", "approve"), 409, "merchant-status-conflict")
    assert_problem(await decide("m-404", "approve"), 404, "merchant-not-found")

    history = (await client.get("/v1/merchants/m-1", headers=TEA_HOUSE)).json()["history"]
    assert [(h["action"], h["by"], h["reason"]) for h in history] == [
        ("register", "u-tea", ""),
        ("approve", "admin-1", ""),
        ("suspend", "admin-1", "counterfeit goods"),
        ("reinstate", "admin-1", ""),
    ]
    rejected_list = await client.get("/v1/merchants", params={"status": "REJECTED"}, headers=ADMIN)
    assert [m["merchant_id"] for m in rejected_list.json()["items"]] == ["m-2"]
    events = [decode_data(e) for e in store.outbox]
    statuses = [e.status for e in events if isinstance(e, MerchantUpserted)]
    assert statuses == ["PENDING", "PENDING", "APPROVED", "SUSPENDED", "APPROVED", "REJECTED"]


async def test_only_an_admin_decides_and_only_the_merchant_or_an_admin_sees_it(
    catalog: httpx.AsyncClient,
) -> None:
    suspend = {"reason": "because"}

    assert_problem(await catalog.post("/v1/merchants/m-1/suspend", json=suspend), 401, "unauthenticated")
    assert_problem(
        await catalog.post("/v1/merchants/m-1/suspend", json=suspend, headers=TEA_HOUSE), 403, "forbidden"
    )
    assert_problem(await catalog.get("/v1/merchants/m-1"), 401, "unauthenticated")
    assert_problem(await catalog.get("/v1/merchants/m-1", headers=POTTERY), 403, "forbidden")
    assert_problem(await catalog.get("/v1/merchants", headers=TEA_HOUSE), 403)
    assert_problem(await catalog.get("/v1/merchants", params={"status": "GONE"}, headers=ADMIN), 422)
    assert (await catalog.get("/v1/merchants/m-1", headers=TEA_HOUSE)).json()["status"] == "APPROVED"


async def test_a_merchant_changes_the_payment_methods_it_accepts(
    catalog: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    change = {"name": "West Lake Tea", "payment_methods": ["alipay"]}

    changed = await catalog.put("/v1/merchants/m-1", json=change, headers=TEA_HOUSE)

    assert changed.status_code == 200
    assert (changed.json()["payment_methods"], changed.json()["status"]) == (["alipay"], "APPROVED")
    assert (await catalog.put("/v1/merchants/m-3", json=change, headers=ADMIN)).status_code == 201
    assert_problem(await catalog.put("/v1/merchants/m-1", json=change, headers=POTTERY), 403, "forbidden")
    assert_problem(await catalog.put("/v1/merchants/m-1", json=change), 401)
    new_one = bearer(Principal("u-new", Role.MERCHANT, merchant_id="m-9"))
    assert_problem(await catalog.put("/v1/merchants/m-9", json=change, headers=new_one), 403, "forbidden")
    assert [decode_data(e).subject() for e in store.outbox] == ["m-1", "m-3"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        pytest.param([], "at least 1 item", id="none"),
        pytest.param(["alipay", "alipay"], "repeated: alipay", id="repeated"),
        pytest.param(["cash"], "bank_card", id="unknown"),
    ],
)
async def test_payment_methods_are_at_least_one_and_each_once(
    client: httpx.AsyncClient, methods: list[str], message: str
) -> None:
    body = {"merchant_id": "m-1", "name": "Tea", "payment_methods": methods}

    refused = assert_problem(
        await client.post("/v1/merchants", json=body, headers=ADMIN), 422, "invalid-request"
    )

    [error] = refused["errors"]
    assert error["field"].startswith("payment_methods")
    assert message in error["message"]
    assert (await client.get("/v1/merchants", headers=ADMIN)).json() == {"items": []}


# --- products ------------------------------------------------------------------------------------


async def test_put_creates_a_product_lists_it_and_announces_it(
    client: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    await client.post("/v1/merchants", json={"merchant_id": "m-1", "name": "West Lake Tea"}, headers=ADMIN)

    put = await client.put(
        "/v1/products/SKU-TEA",
        json={**TEA, "max_per_order": 5},
        headers={**TEA_HOUSE, "X-Correlation-ID": "corr-1"},
    )

    assert put.status_code == 201
    assert put.json() == {
        "sku": "SKU-TEA",
        "name": "Longjing",
        "price_fen": 8800,
        "currency": "CNY",
        "available": 10,
        "reserved": 0,
        "merchant_id": "m-1",
        "kind": "physical",
        "active": True,
        "max_per_order": 5,
        "price_tiers": [],
        "description": "",
        "category": "",
        "attributes": {},
        "payment_methods": [],
        "low_stock_threshold": None,
    }
    assert (await product(client)) == put.json()
    assert (await client.get("/v1/products")).json() == {"items": [put.json()]}
    assert (await client.get("/v1/products", params={"merchant_id": "m-2"})).json() == {"items": []}
    _, announced = store.outbox
    assert announced.correlation_id == "corr-1"
    assert decode_data(announced) == ProductUpserted(
        sku="SKU-TEA", name="Longjing", merchant_id="m-1", price_fen=8800, max_per_order=5
    )


async def test_a_new_product_without_stock_starts_at_zero_with_no_lower_limit(
    catalog: httpx.AsyncClient,
) -> None:
    body = {"name": "Cup", "merchant_id": "m-2", "price_fen": 3900}

    created = await catalog.put("/v1/products/SKU-CUP", json=body, headers=POTTERY)

    assert created.status_code == 201
    assert (created.json()["available"], created.json()["max_per_order"]) == (0, 999)


async def test_with_three_of_ten_sold_a_price_change_leaves_seven_and_adding_five_makes_twelve(
    catalog: httpx.AsyncClient, service: Inventory
) -> None:
    await handle_batch(
        service, [delivery(placed("o-1", line("SKU-TEA", 1))), delivery(placed("o-2", line("SKU-TEA", 2)))]
    )
    await handle_batch(service, [delivery(confirmed("o-1", line("SKU-TEA", 1)))])
    assert await stock(catalog) == (7, 2)

    repriced = await catalog.put("/v1/products/SKU-TEA", json={**TEA, "price_fen": 9900}, headers=TEA_HOUSE)

    assert repriced.status_code == 200
    assert (repriced.json()["price_fen"], repriced.json()["available"], repriced.json()["reserved"]) == (
        9900,
        7,
        2,
    )
    restocked = await catalog.post("/v1/products/SKU-TEA/stock", json={"add": 5}, headers=TEA_HOUSE)
    assert restocked.status_code == 200
    assert (restocked.json()["available"], restocked.json()["reserved"]) == (12, 2)
    assert (await product(catalog)) == restocked.json()


async def test_a_merchant_cannot_edit_another_merchants_product(
    catalog: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    hijack = {**TEA, "name": "Mine now", "merchant_id": "m-2"}

    assert_problem(await catalog.put("/v1/products/SKU-TEA", json=hijack, headers=POTTERY), 403, "forbidden")
    assert_problem(await catalog.put("/v1/products/SKU-TEA", json=TEA, headers=SHOPPER), 403, "forbidden")
    assert_problem(await catalog.put("/v1/products/SKU-TEA", json=TEA), 401, "unauthenticated")
    bad_token = {"Authorization": "Bearer not-a-token"}
    assert_problem(
        await catalog.put("/v1/products/SKU-TEA", json=TEA, headers=bad_token), 401, "unauthenticated"
    )
    assert_problem(await catalog.put("/v1/products/SKU-NEW", json=TEA, headers=POTTERY), 403, "forbidden")

    assert (await product(catalog))["name"] == "Longjing"
    assert (await catalog.get("/v1/products/SKU-NEW")).status_code == 404
    assert store.outbox == []


async def test_only_an_admin_moves_a_product_to_another_merchant(catalog: httpx.AsyncClient) -> None:
    move = {**TEA, "merchant_id": "m-2"}

    refused = assert_problem(
        await catalog.put("/v1/products/SKU-TEA", json=move, headers=TEA_HOUSE), 409, "product-move-refused"
    )
    assert "only an admin" in refused["detail"]
    assert (await product(catalog))["merchant_id"] == "m-1"

    moved = await catalog.put("/v1/products/SKU-TEA", json=move, headers=ADMIN)
    assert (moved.status_code, moved.json()["merchant_id"], moved.json()["available"]) == (200, "m-2", 10)
    assert (
        await catalog.post("/v1/products/SKU-TEA/stock", json={"add": 1}, headers=POTTERY)
    ).status_code == 200
    assert_problem(await catalog.post("/v1/products/SKU-TEA/stock", json={"add": 1}, headers=TEA_HOUSE), 403)


async def test_a_product_of_an_unknown_merchant_names_the_field(client: httpx.AsyncClient) -> None:
    refused = assert_problem(
        await client.put("/v1/products/SKU-TEA", json=TEA, headers=ADMIN), 422, "unknown-merchant"
    )

    assert refused["title"] == "Unknown merchant"
    assert [e["field"] for e in refused["errors"]] == ["merchant_id"]
    assert (await client.get("/v1/products/SKU-TEA")).status_code == 404


async def test_reads_are_public_and_an_unknown_product_is_404(catalog: httpx.AsyncClient) -> None:
    assert (await catalog.get("/v1/products")).status_code == 200
    assert_problem(await catalog.get("/v1/products/NOPE"), 404, "product-not-found")
    assert_problem(await catalog.get("/v1/products", params={"merchant_id": "m 1; drop"}), 422)


# --- stock ---------------------------------------------------------------------------------------


async def test_a_correction_cannot_take_away_units_orders_hold(
    catalog: httpx.AsyncClient, service: Inventory
) -> None:
    await handle_batch(service, [delivery(placed("o-1", line("SKU-TEA", 4)))])

    too_many = await catalog.post("/v1/products/SKU-TEA/stock", json={"add": -7}, headers=ADMIN)

    detail = assert_problem(too_many, 409, "stock-out-of-range")["detail"]
    assert "only 6 are sellable" in detail and "4 more are held by orders" in detail
    assert await stock(catalog) == (6, 4)
    corrected = await catalog.post("/v1/products/SKU-TEA/stock", json={"add": -6}, headers=TEA_HOUSE)
    assert (corrected.status_code, corrected.json()["available"]) == (200, 0)


async def test_stock_changes_need_the_owner_or_an_admin_and_a_known_product(
    catalog: httpx.AsyncClient,
) -> None:
    add = {"add": 5}

    assert_problem(await catalog.post("/v1/products/SKU-TEA/stock", json=add), 401, "unauthenticated")
    assert_problem(
        await catalog.post("/v1/products/SKU-TEA/stock", json=add, headers=POTTERY), 403, "forbidden"
    )
    assert_problem(
        await catalog.post("/v1/products/SKU-TEA/stock", json=add, headers=SHOPPER), 403, "forbidden"
    )
    assert_problem(
        await catalog.post("/v1/products/NOPE/stock", json=add, headers=ADMIN), 404, "product-not-found"
    )
    assert (await product(catalog))["available"] == 10
    assert (await catalog.post("/v1/products/SKU-TEA/stock", json=add, headers=ADMIN)).json()[
        "available"
    ] == 15


async def test_a_restock_past_the_stock_limit_is_refused(catalog: httpx.AsyncClient) -> None:
    assert_problem(
        await catalog.post("/v1/products/SKU-TEA/stock", json={"add": MAX_STOCK}, headers=ADMIN),
        409,
        "stock-out-of-range",
    )
    assert (await product(catalog))["available"] == 10


# --- bounds: 422, never 500 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_fen", -1),
        ("price_fen", MAX_PRICE_FEN + 1),
        ("price_fen", 10**30),
        ("price_fen", 1e300),
        ("price_fen", 12.5),
        ("price_fen", "8800"),
        ("price_fen", True),
        ("available", -1),
        ("available", MAX_STOCK + 1),
        ("available", 10**40),
        ("max_per_order", 0),
        ("max_per_order", 1000),
        ("max_per_order", -5),
        ("name", ""),
        ("name", "x" * 201),
        ("merchant_id", "m 1"),
        ("kind", "digital"),
        ("reserved", 3),
    ],
)
async def test_product_fields_out_of_bounds_are_422_and_change_nothing(
    catalog: httpx.AsyncClient, store: InMemoryInventoryStore, field: str, value: object
) -> None:
    for sku in ("SKU-TEA", "SKU-NEW"):
        refused = assert_problem(
            await catalog.put(f"/v1/products/{sku}", json={**TEA, field: value}, headers=ADMIN),
            422,
            "invalid-request",
        )
        assert [e["field"] for e in refused["errors"]] == [field]

    unchanged = await product(catalog)
    assert (unchanged["price_fen"], unchanged["available"], unchanged["max_per_order"]) == (8800, 10, 999)
    assert (await catalog.get("/v1/products/SKU-NEW")).status_code == 404
    assert store.outbox == []


TIERS = [{"min_quantity": 3, "unit_price_fen": 8000}, {"min_quantity": 10, "unit_price_fen": 7500}]


async def test_price_tiers_are_kept_shown_announced_and_replaced_by_an_edit(
    catalog: httpx.AsyncClient, store: InMemoryInventoryStore
) -> None:
    created = await catalog.put("/v1/products/SKU-BULK", json={**TEA, "price_tiers": TIERS}, headers=ADMIN)
    edited = await catalog.put(
        "/v1/products/SKU-TEA", json={**TEA, "price_tiers": TIERS[1:]}, headers=TEA_HOUSE
    )

    assert created.status_code == 201, created.text
    assert created.json()["price_tiers"] == TIERS == (await product(catalog, "SKU-BULK"))["price_tiers"]
    assert edited.status_code == 200, edited.text
    assert (await product(catalog))["price_tiers"] == TIERS[1:]
    announced = [decode_data(envelope) for envelope in store.outbox]
    assert [(e.sku, e.price_tiers) for e in announced if isinstance(e, ProductUpserted)] == [
        ("SKU-BULK", [PriceTier(**t) for t in TIERS]),
        ("SKU-TEA", [PriceTier(**TIERS[1])]),
    ]
    cleared = await catalog.put("/v1/products/SKU-TEA", json=TEA, headers=TEA_HOUSE)
    assert cleared.json()["price_tiers"] == [], "a PUT without tiers leaves the product with one price"


def tiers_of(*pairs: tuple[object, object]) -> list[dict[str, object]]:
    return [{"min_quantity": q, "unit_price_fen": p} for q, p in pairs]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param({"price_tiers": tiers_of((3, 8800))}, "price_tiers.0.unit_price_fen", id="not-cheaper"),
        pytest.param(
            {"price_tiers": tiers_of((3, 8000), (3, 7000))}, "price_tiers.1.min_quantity", id="same-quantity"
        ),
        pytest.param(
            {"price_tiers": tiers_of((5, 8000), (3, 7000))},
            "price_tiers.1.min_quantity",
            id="falling-quantity",
        ),
        pytest.param(
            {"price_tiers": tiers_of((3, 8000), (5, 8000))}, "price_tiers.1.unit_price_fen", id="same-price"
        ),
        pytest.param(
            {"price_tiers": tiers_of((3, 7000), (5, 8000))}, "price_tiers.1.unit_price_fen", id="rising-price"
        ),
        pytest.param(
            {"max_per_order": 5, "price_tiers": tiers_of((6, 8000))},
            "price_tiers.0.min_quantity",
            id="unreachable",
        ),
        pytest.param(
            {"price_tiers": tiers_of(*((2 + n, 8000 - n) for n in range(11)))},
            "price_tiers",
            id="eleven-tiers",
        ),
        pytest.param({"price_tiers": tiers_of((1, 8000))}, "price_tiers.0.min_quantity", id="one-unit"),
        pytest.param({"price_tiers": tiers_of((1000, 8000))}, "price_tiers.0.min_quantity", id="over-999"),
        pytest.param(
            {"price_tiers": tiers_of(("3", 8000))}, "price_tiers.0.min_quantity", id="string-quantity"
        ),
        pytest.param({"price_tiers": tiers_of((3, -1))}, "price_tiers.0.unit_price_fen", id="negative-price"),
        pytest.param(
            {"price_tiers": tiers_of((3, 79.5))}, "price_tiers.0.unit_price_fen", id="fraction-price"
        ),
        pytest.param(
            {"price_tiers": [{"min_quantity": 3, "unit_price_fen": 8000, "percent": 5}]},
            "price_tiers.0.percent",
            id="unknown-field",
        ),
        pytest.param({"price_tiers": {"min_quantity": 3}}, "price_tiers", id="not-a-list"),
    ],
)
async def test_bad_price_tiers_are_422_naming_the_field_and_change_nothing(
    catalog: httpx.AsyncClient, store: InMemoryInventoryStore, extra: dict[str, object], field: str
) -> None:
    for sku in ("SKU-TEA", "SKU-NEW"):
        refused = assert_problem(
            await catalog.put(f"/v1/products/{sku}", json={**TEA, **extra}, headers=ADMIN),
            422,
            "invalid-request",
        )
        assert [e["field"] for e in refused["errors"]] == [field]

    unchanged = await product(catalog)
    assert (unchanged["price_tiers"], unchanged["max_per_order"]) == ([], 999)
    assert (await catalog.get("/v1/products/SKU-NEW")).status_code == 404
    assert store.outbox == []


async def test_the_bounds_themselves_are_accepted(catalog: httpx.AsyncClient) -> None:
    top = {**TEA, "price_fen": MAX_PRICE_FEN, "available": MAX_STOCK, "max_per_order": 1}

    created = await catalog.put("/v1/products/SKU-TOP", json=top, headers=ADMIN)

    assert created.status_code == 201
    assert (created.json()["price_fen"], created.json()["available"]) == (MAX_PRICE_FEN, MAX_STOCK)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"add": 0}, id="zero"),
        pytest.param({"add": MAX_STOCK + 1}, id="above"),
        pytest.param({"add": -MAX_STOCK - 1}, id="below"),
        pytest.param({"add": 10**30}, id="huge"),
        pytest.param({"add": 1.5}, id="fraction"),
        pytest.param({"add": "5"}, id="string"),
        pytest.param({"add": True}, id="boolean"),
        pytest.param({"add": None}, id="null"),
        pytest.param({}, id="missing"),
        pytest.param({"add": 5, "available": 50}, id="unknown-field"),
    ],
)
async def test_stock_changes_out_of_bounds_are_422_and_change_nothing(
    catalog: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    refused = assert_problem(
        await catalog.post("/v1/products/SKU-TEA/stock", json=body, headers=ADMIN), 422, "invalid-request"
    )

    assert refused["errors"]
    assert (await product(catalog))["available"] == 10


async def test_a_number_json_cannot_hold_is_a_client_error_not_a_crash(catalog: httpx.AsyncClient) -> None:
    async def send(raw: str) -> httpx.Response:
        headers = {**ADMIN, "Content-Type": "application/json"}
        return await catalog.post("/v1/products/SKU-TEA/stock", content=raw, headers=headers)

    assert_problem(await send('{"add": 1e999}'), 422, "invalid-request")
    assert_problem(await send('{"add": NaN}'), 422, "invalid-request")
    # Past Python's 4300-digit limit the body does not even parse: FastAPI answers 400 for that.
    too_long = await send('{"add": ' + "9" * 5000 + "}")
    assert too_long.status_code in (400, 422)
    assert too_long.headers["content-type"] == PROBLEM

    assert (await product(catalog))["available"] == 10


# --- the OpenAPI document ------------------------------------------------------------------------


async def test_every_route_declares_its_problems_and_every_model_an_example(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
    }

    assert set(operations) == {
        ("GET", "/v1/products"),
        ("GET", "/v1/products/{sku}"),
        ("PUT", "/v1/products/{sku}"),
        ("POST", "/v1/products/{sku}/stock"),
        ("POST", "/v1/products/{sku}/codes"),
        ("POST", "/v1/products/{sku}/subscriptions"),
        ("DELETE", "/v1/products/{sku}/subscriptions"),
        ("GET", "/v1/products/{sku}/slots"),
        ("PUT", "/v1/products/{sku}/slots/{slot_id}"),
        ("DELETE", "/v1/products/{sku}/slots/{slot_id}"),
        ("GET", "/v1/merchants"),
        ("POST", "/v1/merchants"),
        ("GET", "/v1/merchants/{merchant_id}"),
        ("PUT", "/v1/merchants/{merchant_id}"),
        ("POST", "/v1/merchants/{merchant_id}/approve"),
        ("POST", "/v1/merchants/{merchant_id}/reject"),
        ("POST", "/v1/merchants/{merchant_id}/suspend"),
        ("POST", "/v1/merchants/{merchant_id}/reinstate"),
        ("GET", "/v1/coupons"),
        ("GET", "/v1/coupons/{code}"),
        ("PUT", "/v1/coupons/{code}"),
    }
    for (method, path), operation in operations.items():
        declared = set(operation["responses"])
        if method != "GET":
            assert {"401", "403", "422"} <= declared, (method, path)
            assert operation.get("security"), (method, path)
        if (method == "GET" and "{" in path) or path.endswith(("/stock", "/codes")) or "{slot_id}" in path:
            assert "404" in declared, (method, path)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert "application/problem+json" in response["content"], (method, path, status)
    assert {"409"} <= set(operations["PUT", "/v1/products/{sku}"]["responses"])
    assert {"201", "200"} <= set(operations["PUT", "/v1/products/{sku}"]["responses"])
    assert "stock" in operations["PUT", "/v1/products/{sku}"]["description"]
    schemas = document["components"]["schemas"]
    for model in (
        "ProductIn",
        "ProductOut",
        "ProductList",
        "StockChange",
        "CodesAddedOut",
        "SlotIn",
        "SlotOut",
        "SlotList",
        "MerchantIn",
        "MerchantChange",
        "MerchantOut",
        "MerchantList",
        "CouponIn",
        "CouponOut",
        "CouponList",
    ):
        assert schemas[model].get("examples"), model
    assert "Ignored when the product exists" in schemas["ProductIn"]["properties"]["available"]["description"]

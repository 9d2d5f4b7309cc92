"""The demo seed against the real API over the in-memory store: safe to run again."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.inventory.api import build_router
from services.inventory.handlers import Inventory
from services.inventory.seed import (
    COUPONS,
    MERCHANTS,
    PRODUCTS,
    REGISTRATIONS,
    SERVICES,
    SLOT_SEATS,
    SLOT_TIMES,
    VIRTUAL_PRODUCTS,
    seed,
)
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import CouponUpserted, MerchantUpserted, PaymentMethod, decode_data
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.inventory import InMemoryInventoryStore

pytestmark = pytest.mark.unit


@pytest.fixture
def store() -> InMemoryInventoryStore:
    return InMemoryInventoryStore()


@pytest.fixture
def admin_client(store: InMemoryInventoryStore) -> TestClient:
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(Inventory(store=store, reservation_ttl=timedelta(minutes=15))))
    token = TokenIssuer(SharedSettings()).access_token(Principal("seed", Role.ADMIN))
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def run(client: TestClient, now: datetime | None = None) -> list[str]:
    out = io.StringIO()
    seed(client, out, now)
    return out.getvalue().splitlines()


def test_the_seed_creates_the_demo_catalog_with_payment_methods_and_limits(
    admin_client: TestClient, store: InMemoryInventoryStore
) -> None:
    lines = run(admin_client)

    assert len(lines) == len(MERCHANTS) + len(REGISTRATIONS) + len(PRODUCTS) + len(VIRTUAL_PRODUCTS) + len(
        SERVICES
    ) + len(COUPONS)
    assert all(" created " in line or " registered" in line for line in lines)
    merchants = admin_client.get("/v1/merchants").json()["items"]
    methods = {m["merchant_id"]: m["payment_methods"] for m in merchants}
    statuses = [m["status"] for m in merchants]
    assert (statuses.count("APPROVED"), statuses.count("PENDING")) == (len(MERCHANTS) + 2, 1)
    assert not any("@" in line for line in lines), "a contact is personal data: never printed"
    assert methods["m-jingdezhen"] == [PaymentMethod.WECHAT_PAY, PaymentMethod.ALIPAY]
    assert methods["m-westlake-tea"] == list(PaymentMethod)
    gift_box = admin_client.get("/v1/products/SKU-SOLDOUT-1").json()
    assert (gift_box["available"], gift_box["max_per_order"]) == (0, 2)
    assert gift_box["category"] == "food/sichuan"
    on_sale = [p for p in admin_client.get("/v1/products").json()["items"] if p["available"] > 0]
    assert any(p["category"] == "food/sichuan" for p in on_sale), "the sold-out product has substitutes"
    assert all(p["description"] and p["category"] for p in admin_client.get("/v1/products").json()["items"])
    announced = [decode_data(e) for e in store.outbox]
    assert {e.merchant_id for e in announced if isinstance(e, MerchantUpserted)} == {
        merchant_id for merchant_id, *_ in [*MERCHANTS, *REGISTRATIONS]
    }
    assert {e.code for e in announced if isinstance(e, CouponUpserted)} == {code for code, *_ in COUPONS}
    approved = {m["merchant_id"] for m in merchants if m["status"] == "APPROVED"}
    assert all(merchant_id in approved for _, merchant_id, *_ in COUPONS)


def test_running_the_seed_again_keeps_the_stock_products_have_now(admin_client: TestClient) -> None:
    run(admin_client)
    sold = admin_client.post("/v1/products/SKU-TEA-LONGJING/stock", json={"add": -20})
    assert sold.json()["available"] == 100

    again = run(admin_client)

    assert all(" created " not in line and "approved" not in line for line in again)
    pending = admin_client.get("/v1/merchants", params={"status": "PENDING"}).json()["items"]
    assert [m["merchant_id"] for m in pending] == ["m-harbin-furs"]
    assert any("SKU-TEA-LONGJING" in line and "stock kept" in line for line in again)
    assert admin_client.get("/v1/products/SKU-TEA-LONGJING").json()["available"] == 100
    assert any("WESTLAKE10" in line and "uses kept" in line for line in again)


def test_the_seed_stops_with_the_reason_when_the_api_refuses(store: InMemoryInventoryStore) -> None:
    app = create_app("inventory", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(Inventory(store=store, reservation_ttl=timedelta(minutes=15))))

    with pytest.raises(SystemExit, match="401 this request needs an `Authorization: Bearer"):
        run(TestClient(app))


def test_a_virtual_products_demo_codes_are_uploaded_once_and_never_printed(admin_client: TestClient) -> None:
    [(sku, _, _, _, _, codes)] = VIRTUAL_PRODUCTS
    first = run(admin_client)
    again = run(admin_client)

    gift = admin_client.get(f"/v1/products/{sku}").json()
    assert (gift["kind"], gift["available"]) == ("virtual", len(codes))
    assert any(sku in line and f"{len(codes)} codes" in line for line in first)
    assert any(sku in line and "codes kept" in line for line in again)
    assert not any(code in line for code in codes for line in first + again)


def test_the_seed_offers_bookable_slots_ahead_and_a_later_run_keeps_them_and_adds_the_new_days(
    admin_client: TestClient,
) -> None:
    [(sku, *_)] = SERVICES
    run(admin_client)
    first = admin_client.get(f"/v1/products/{sku}/slots").json()["items"]
    [earliest, *_] = first
    closed = admin_client.put(
        f"/v1/products/{sku}/slots/{earliest['slot_id']}",
        json={"starts_at": earliest["starts_at"], "ends_at": earliest["ends_at"], "capacity": 0},
    )
    assert closed.status_code == 200, closed.text

    # The next day: yesterday's first day of slots is today's, and one more day comes into range.
    again = run(admin_client, now=datetime.now(UTC) + timedelta(days=1))

    later = admin_client.get(f"/v1/products/{sku}/slots").json()["items"]
    assert len(first) == len(SLOT_TIMES) and all(s["capacity"] == SLOT_SEATS for s in first)
    assert admin_client.get(f"/v1/products/{sku}").json()["kind"] == "service"
    assert {s["slot_id"] for s in first} <= {s["slot_id"] for s in later}
    assert next(s for s in later if s["slot_id"] == earliest["slot_id"])["capacity"] == 0, "left as it was"
    assert any(sku in line and "slots kept" in line for line in again)

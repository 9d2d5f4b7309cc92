"""Substitutes a shopper can act on, back-in-stock and low-stock notices, and per-product payment
methods, end to end: HTTP in, Kafka between the services, HTTP out."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from shared.auth import Role
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually


async def _restock(platform: Platform, sku: str, add: int) -> None:
    response = await platform.inventory.post(
        f"/v1/products/{sku}/stock", json={"add": add}, headers=platform.admin()
    )
    assert response.status_code == 200, response.text


async def _notices(
    platform: Platform, headers: dict[str, str], template: str, sku: str
) -> list[dict[str, Any]]:
    """The caller's notifications from `template` about `sku`."""
    response = await platform.notification.get("/v1/notifications", headers=headers)
    assert response.status_code == 200, response.text
    return [n for n in response.json()["items"] if n["template"] == template and sku in n["body"]]


async def test_an_out_of_stock_order_is_rejected_with_substitutes_from_its_category_closest_price_first(
    platform: Platform,
) -> None:
    category = f"test/c{uuid.uuid4().hex[:12]}"
    tea_house, pottery = await platform.merchant(), await platform.merchant()
    sold_out = await platform.product(available=0, price_fen=10000, merchant_id=tea_house, category=category)
    near = await platform.product(available=1, price_fen=10500, merchant_id=pottery, category=category)
    as_near_more_stock = await platform.product(
        available=9, price_fen=9500, merchant_id=tea_house, category=category
    )
    far = await platform.product(available=50, price_fen=4000, merchant_id=pottery, category=category)
    await platform.product(available=5, price_fen=20000, merchant_id=pottery, category=category)
    await platform.product(available=0, price_fen=10000, merchant_id=pottery, category=category)
    await platform.product(available=5, price_fen=10000, merchant_id=tea_house, category=f"{category}/other")

    placed = await platform.place([(sold_out, 1)])
    settled = await platform.settled(placed["order_id"])

    assert (settled["status"], settled["reason"]) == ("REJECTED", "OUT_OF_STOCK")
    seen = await platform.gateway.get(
        f"/v1/orders/{placed['order_id']}", headers=platform.customer(placed["customer_id"])
    )
    assert seen.status_code == 200, seen.text
    assert [(s["sku"], s["price_fen"]) for s in seen.json()["substitutes"]] == [
        (as_near_more_stock, 9500),
        (near, 10500),
        (far, 4000),
    ]
    assert all(s["name"] == f"Test product {s['sku']}" for s in seen.json()["substitutes"])
    # A shopper can act on them: ordering the first substitute goes through.
    instead = await platform.place([(as_near_more_stock, 1)], customer_id=placed["customer_id"])
    assert (await platform.settled(instead["order_id"]))["status"] == "CONFIRMED"


async def test_each_subscriber_is_told_once_when_the_product_is_back_and_a_later_restock_tells_no_one(
    platform: Platform,
) -> None:
    sku = await platform.product(available=0)
    li, wang, late = (platform.customer(f"cust-{uuid.uuid4().hex[:8]}") for _ in range(3))
    answers = [
        (await platform.inventory.post(f"/v1/products/{sku}/subscriptions", headers=who)).status_code
        for who in (li, li, wang, wang)
    ]
    assert answers == [201, 200, 201, 200]

    await _restock(platform, sku, 3)

    for who in (li, wang):
        await eventually(
            partial(_notices, platform, who, "customer.back_in_stock", sku),
            lambda found: len(found) == 1,
            what=f"one back-in-stock notice about {sku} for each subscriber",
        )
    in_stock = await platform.inventory.post(f"/v1/products/{sku}/subscriptions", headers=late)
    assert in_stock.status_code == 409, in_stock.text
    assert in_stock.json()["type"].endswith("/product-in-stock")

    # Sold out again; only `late` subscribes this time. The next restock tells `late` alone: once
    # that notice is there, the restock has been handled, and nobody told before is told again.
    await _restock(platform, sku, -3)
    assert (
        await platform.inventory.post(f"/v1/products/{sku}/subscriptions", headers=late)
    ).status_code == 201
    await _restock(platform, sku, 2)
    await _restock(platform, sku, 2)

    await eventually(
        lambda: _notices(platform, late, "customer.back_in_stock", sku),
        lambda found: len(found) == 1,
        what=f"the back-in-stock notice about {sku} for the customer who subscribed after the first restock",
    )
    for who in (li, wang):
        assert len(await _notices(platform, who, "customer.back_in_stock", sku)) == 1


async def test_an_unsubscribed_customer_is_not_told(platform: Platform) -> None:
    sku = await platform.product(available=0)
    leaving, staying = (platform.customer(f"cust-{uuid.uuid4().hex[:8]}") for _ in range(2))
    for who in (leaving, staying):
        assert (
            await platform.inventory.post(f"/v1/products/{sku}/subscriptions", headers=who)
        ).status_code == 201
    assert (
        await platform.inventory.delete(f"/v1/products/{sku}/subscriptions", headers=leaving)
    ).status_code == 204

    await _restock(platform, sku, 1)

    await eventually(
        lambda: _notices(platform, staying, "customer.back_in_stock", sku),
        lambda found: len(found) == 1,
        what=f"the back-in-stock notice about {sku} for the customer still subscribed",
    )
    assert await _notices(platform, leaving, "customer.back_in_stock", sku) == []


async def test_the_merchant_is_warned_once_per_dip_to_the_low_stock_threshold(platform: Platform) -> None:
    merchant_id = await platform.merchant()
    merchant = platform.bearer(Role.MERCHANT, merchant_id, merchant_id=merchant_id)
    sku = await platform.product(available=5, merchant_id=merchant_id, low_stock_threshold=2)

    for quantity in (3, 1):  # 5 → 2 (at the threshold: warned) → 1 (still low: not again)
        order = await platform.place([(sku, quantity)])
        assert (await platform.settled(order["order_id"]))["status"] == "CONFIRMED"
    await _restock(platform, sku, 5)  # 6: above the threshold again
    await _restock(platform, sku, -4)  # 2: a new dip

    warned = await eventually(
        lambda: _notices(platform, merchant, "merchant.low_stock", sku),
        lambda found: len(found) >= 2,
        what=f"two low-stock warnings about {sku}, one per dip",
    )
    assert len(warned) == 2
    assert all("仅剩 2 件" in notice["body"] for notice in warned)


async def test_an_order_paid_with_a_method_a_product_does_not_accept_is_refused_naming_both(
    platform: Platform,
) -> None:
    sku = await platform.product(available=5, payment_methods=["alipay"])
    body = {
        "items": [{"sku": sku, "quantity": 1}],
        "shipping_address": ADDRESS,
        "payment": {"method": "bank_card", "token": "tok_approve"},
    }

    refused = await platform.gateway.post(
        "/v1/orders", json=body, headers=platform.customer(f"cust-{uuid.uuid4().hex[:8]}")
    )

    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert f"bank_card is not accepted for {sku}" in refused.json()["detail"]
    assert (await platform.stock(sku))["reserved"] == 0
    shown = (await platform.gateway.get(f"/v1/products/{sku}")).json()
    assert shown["payment_methods"] == ["alipay"]

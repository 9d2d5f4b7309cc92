"""Merchant vetting end to end: a pending or suspended merchant's products cannot be ordered, and
suspension delists them from the gateway's catalog at once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.auth import Role
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually


async def _order(platform: Platform, sku: str) -> httpx.Response:
    body = {
        "items": [{"sku": sku, "quantity": 1}],
        "shipping_address": ADDRESS,
        "payment": {"method": "bank_card", "token": "tok_approve"},
    }
    return await platform.gateway.post(
        "/v1/orders", json=body, headers=platform.customer(f"cust-{uuid.uuid4().hex[:8]}")
    )


def _sku_error(response: httpx.Response) -> str:
    """The message of the 422's field error on the first item ("" for any other answer)."""
    if response.status_code != 422:
        return ""
    errors: list[dict[str, Any]] = response.json().get("errors") or []
    return next((e["message"] for e in errors if e["field"] == "items.0.sku"), "")


async def _decide(platform: Platform, merchant_id: str, action: str, reason: str = "") -> dict[str, Any]:
    response = await platform.inventory.post(
        f"/v1/merchants/{merchant_id}/{action}", json={"reason": reason}, headers=platform.admin()
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_only_an_approved_merchants_products_can_be_ordered_and_suspension_delists_them(
    platform: Platform,
) -> None:
    merchant_id = f"m-{uuid.uuid4().hex[:8]}"
    merchant = platform.bearer(Role.MERCHANT, merchant_id, merchant_id=merchant_id)
    registered = await platform.inventory.post(
        "/v1/merchants",
        json={
            "merchant_id": merchant_id,
            "name": "Vetted Teahouse",
            "licence_number": "91330106MA2B3C4D5E",
            "contact": "vetted@teahouse.example",
            "webhook_url": "https://teahouse.example/hooks",
        },
        headers=merchant,
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["status"] == "PENDING"
    sku = f"SKU-{uuid.uuid4().hex[:10].upper()}"
    created = await platform.inventory.put(
        f"/v1/products/{sku}",
        json={"name": "Vetted tea", "merchant_id": merchant_id, "price_fen": 2500, "available": 5},
        headers=merchant,
    )
    assert created.status_code == 201, created.text

    # Pending: the gateway refuses the product, naming why, once its replica knows product and merchant.
    await eventually(
        lambda: _order(platform, sku),
        lambda response: "not approved yet" in _sku_error(response),
        what=f"a 422 naming {merchant_id}'s pending status",
    )
    assert (await platform.gateway.get(f"/v1/products/{sku}")).status_code == 404

    approved = await _decide(platform, merchant_id, "approve", "licence checked")
    assert approved["status"] == "APPROVED"
    accepted = await eventually(
        lambda: _order(platform, sku), lambda response: response.status_code == 202, what="an accepted order"
    )
    confirmed = await platform.settled(accepted.json()["order_id"])
    assert confirmed["status"] == "CONFIRMED", confirmed

    suspended = await _decide(platform, merchant_id, "suspend", "counterfeit tea reported")
    assert (suspended["status"], suspended["reason"]) == ("SUSPENDED", "counterfeit tea reported")

    async def listed() -> set[str]:
        items = (await platform.gateway.get("/v1/products", params={"limit": 1000})).json()["items"]
        return {item["sku"] for item in items}

    await eventually(listed, lambda skus: sku not in skus, what=f"{sku} delisted from the gateway")
    refused = await eventually(
        lambda: _order(platform, sku),
        lambda response: "is suspended: counterfeit tea reported" in _sku_error(response),
        what=f"a 422 naming {merchant_id}'s suspension",
    )
    assert refused.headers["content-type"] == "application/problem+json"

    reinstated = await _decide(platform, merchant_id, "reinstate")
    assert [entry["action"] for entry in reinstated["history"]] == [
        "register",
        "approve",
        "suspend",
        "reinstate",
    ]
    await eventually(listed, lambda skus: sku in skus, what=f"{sku} listed again")
    await eventually(
        lambda: _order(platform, sku), lambda response: response.status_code == 202, what="an order again"
    )
    seen_by_merchant = await platform.inventory.get(f"/v1/merchants/{merchant_id}", headers=merchant)
    assert seen_by_merchant.json()["contact"] == "vetted@teahouse.example"
    assert (await platform.inventory.get(f"/v1/merchants/{merchant_id}")).status_code == 401

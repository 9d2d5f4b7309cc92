"""Merchants' coupons end to end: the gateway prices them from its replica, inventory holds one use
with the stock, all or nothing, so a coupon is never used beyond its limit, even by concurrent orders."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.auth import Role
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually

SHOPPERS = 20
USES = 5


def _merchant_token(merchant_id: str) -> dict[str, str]:
    return Platform.bearer(Role.MERCHANT, merchant_id, merchant_id=merchant_id)


async def _coupon(platform: Platform, merchant_id: str, probe_sku: str, **terms: Any) -> str:
    """A new coupon of `merchant_id` (10% off, 5 uses, once per customer, valid now unless `terms`
    say otherwise), once the gateway's replica knows it. `probe_sku` is another merchant's product:
    an order for it with the coupon is refused for what the coupon says, not for an unknown code,
    once the replica has it, and no order is ever made that way."""
    code = f"T{uuid.uuid4().hex[:10].upper()}"
    now = datetime.now(UTC)
    body = {
        "merchant_id": merchant_id,
        "discount": "percent",
        "value": 10,
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "valid_until": (now + timedelta(days=1)).isoformat(),
        "total_uses": USES,
        "once_per_customer": True,
        **terms,
    }
    created = await platform.inventory.put(
        f"/v1/coupons/{code}", json=body, headers=_merchant_token(merchant_id)
    )
    assert created.status_code == 201, created.text

    async def probe() -> str:
        return _coupon_error(await _order(platform, [(probe_sku, 1)], code))

    await eventually(
        probe, lambda error: "there is no coupon" not in error, what=f"coupon {code} in the gateway's replica"
    )
    return code


async def _order(
    platform: Platform,
    items: list[tuple[str, int]],
    coupon: str | None,
    *,
    customer_id: str | None = None,
    token: str = "tok_approve",
) -> httpx.Response:
    body: dict[str, Any] = {
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
        "shipping_address": ADDRESS,
        "payment": {"method": "bank_card", "token": token},
    }
    if coupon is not None:
        body["coupon"] = coupon
    customer = customer_id or f"cust-{uuid.uuid4().hex[:8]}"
    return await platform.gateway.post("/v1/orders", json=body, headers=platform.customer(customer))


async def _placed(platform: Platform, items: list[tuple[str, int]], coupon: str, **how: str) -> str:
    response = await _order(platform, items, coupon, **how)
    assert response.status_code == 202, response.text
    return str(response.json()["order_id"])


def _coupon_error(response: httpx.Response) -> str:
    """The 422's message on the `coupon` field ("" for any other answer)."""
    if response.status_code != 422:
        return ""
    errors: list[dict[str, Any]] = response.json().get("errors") or []
    return next((e["message"] for e in errors if e["field"] == "coupon"), "")


async def _uses(platform: Platform, code: str, merchant_id: str) -> tuple[int, int, int]:
    """(left, held, used), as the coupon's merchant sees them."""
    response = await platform.inventory.get(f"/v1/coupons/{code}", headers=_merchant_token(merchant_id))
    assert response.status_code == 200, response.text
    coupon = response.json()
    return coupon["left"], coupon["held"], coupon["used"]


async def _settled_uses(
    platform: Platform, code: str, merchant_id: str, wanted: tuple[int, int, int]
) -> None:
    await eventually(
        lambda: _uses(platform, code, merchant_id),
        lambda uses: uses == wanted,
        what=f"coupon {code} to have (left, held, used) == {wanted}",
    )


async def test_a_coupon_limited_to_five_uses_is_used_exactly_five_times_by_twenty_concurrent_orders(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    sku = await platform.product(available=100, price_fen=1000, merchant_id=merchant_id)
    code = await _coupon(platform, merchant_id, await platform.product(available=1))

    order_ids = await asyncio.gather(*(_placed(platform, [(sku, 1)], code) for _ in range(SHOPPERS)))
    settled: list[dict[str, Any]] = await asyncio.gather(
        *(platform.settled(order_id, timeout_s=90) for order_id in order_ids)
    )

    outcomes = sorted((order["status"], order["reason"]) for order in settled)
    assert outcomes.count(("CONFIRMED", None)) == USES, outcomes
    assert outcomes.count(("REJECTED", "COUPON_UNAVAILABLE")) == SHOPPERS - USES, outcomes
    for order in settled:
        assert order["coupon"] == {"code": code, "merchant_id": merchant_id, "discount_fen": 100}
        assert (order["lines_total_fen"], order["total_fen"]) == (1000, 900)
    rejected = [order for order in settled if order["status"] == "REJECTED"]
    assert all("no use left" in order["timeline"][-1]["detail"] for order in rejected), rejected[0]
    await _settled_uses(platform, code, merchant_id, (0, 0, USES))
    await eventually(
        lambda: platform.stock(sku),
        lambda stock: (stock["available"], stock["reserved"]) == (100 - USES, 0),
        what=f"{sku}: only the confirmed orders' units gone, nothing still reserved",
    )


async def test_a_once_per_customer_coupon_is_refused_to_a_customer_who_used_it(platform: Platform) -> None:
    merchant_id = await platform.merchant()
    sku = await platform.product(available=10, price_fen=1000, merchant_id=merchant_id)
    code = await _coupon(platform, merchant_id, await platform.product(available=1))
    shopper = f"cust-{uuid.uuid4().hex[:8]}"

    first = await platform.settled(await _placed(platform, [(sku, 1)], code, customer_id=shopper))
    again = await platform.settled(await _placed(platform, [(sku, 1)], code, customer_id=shopper))
    someone_else = await platform.settled(await _placed(platform, [(sku, 1)], code))

    assert (first["status"], first["total_fen"]) == ("CONFIRMED", 900)
    assert (again["status"], again["reason"]) == ("REJECTED", "COUPON_UNAVAILABLE")
    assert "once per customer" in again["timeline"][-1]["detail"]
    assert someone_else["status"] == "CONFIRMED"
    await _settled_uses(platform, code, merchant_id, (USES - 2, 0, 2))


async def test_the_gateway_refuses_a_coupon_below_its_minimum_spend_expired_or_unknown(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    sku = await platform.product(available=10, price_fen=1000, merchant_id=merchant_id)
    elsewhere = await platform.product(available=1)
    spend_50 = await _coupon(platform, merchant_id, elsewhere, min_spend_fen=5000)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    expired = await _coupon(
        platform,
        merchant_id,
        elsewhere,
        valid_from=(yesterday - timedelta(days=7)).isoformat(),
        valid_until=yesterday.isoformat(),
    )

    below = await _order(platform, [(sku, 4)], spend_50)
    too_late = await _order(platform, [(sku, 1)], expired)
    unknown = await _order(platform, [(sku, 1)], "NO-SUCH-COUPON")

    assert "needs ¥50.00 spent" in _coupon_error(below) and "has ¥40.00" in _coupon_error(below), below.text
    assert "expired at" in _coupon_error(too_late), too_late.text
    assert "there is no coupon NO-SUCH-COUPON" in _coupon_error(unknown), unknown.text
    for refused in (below, too_late, unknown):
        assert refused.headers["content-type"] == "application/problem+json"
    assert await _uses(platform, spend_50, merchant_id) == (USES, 0, 0)
    assert await _uses(platform, expired, merchant_id) == (USES, 0, 0)
    assert (await platform.stock(sku))["available"] == 10
    # Reaching the minimum spend, the very same coupon is taken (a lower-case code is the same code).
    enough = await platform.settled(await _placed(platform, [(sku, 5)], spend_50.lower()))
    assert (enough["status"], enough["total_fen"], enough["coupon"]["code"]) == ("CONFIRMED", 4500, spend_50)


async def test_a_declined_payment_gives_the_coupons_use_back_to_the_coupon_and_the_customer(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    sku = await platform.product(available=10, price_fen=1000, merchant_id=merchant_id)
    code = await _coupon(platform, merchant_id, await platform.product(available=1), total_uses=1)
    shopper = f"cust-{uuid.uuid4().hex[:8]}"

    declined = await platform.settled(
        await _placed(platform, [(sku, 1)], code, customer_id=shopper, token="tok_decline")
    )
    assert (declined["status"], declined["reason"]) == ("CANCELLED", "PAYMENT_DECLINED")
    await _settled_uses(platform, code, merchant_id, (1, 0, 0))

    paid = await platform.settled(await _placed(platform, [(sku, 1)], code, customer_id=shopper))
    assert (paid["status"], paid["total_fen"]) == ("CONFIRMED", 900)
    await _settled_uses(platform, code, merchant_id, (0, 0, 1))


async def test_a_coupon_comes_off_its_merchants_lines_after_quantity_tiers_and_that_is_what_is_charged(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    tiered = await platform.product(
        available=10,
        price_fen=1000,
        merchant_id=merchant_id,
        price_tiers=[{"min_quantity": 3, "unit_price_fen": 799}],
    )
    other_merchants = await platform.product(available=10, price_fen=1999)
    code = await _coupon(platform, merchant_id, other_merchants, value=15)

    order = await platform.settled(await _placed(platform, [(tiered, 3), (other_merchants, 1)], code))

    # 3 x 799 = 2397 reaches the tier; 15% of it is 359.55, rounded down; the other line is untouched.
    assert order["status"] == "CONFIRMED", order
    assert order["coupon"]["discount_fen"] == 359
    assert (order["lines_total_fen"], order["total_fen"]) == (2397 + 1999, 2397 + 1999 - 359)
    payment = await platform.payment_of(order["order_id"])
    charged = [entry["amount_fen"] for entry in await platform.ledger(payment["payment_id"])]
    assert charged and set(charged) == {2397 + 1999 - 359}, charged

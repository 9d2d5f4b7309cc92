"""Virtual products end to end: a merchant fills a pool of codes, a paid order is given its own codes,
and only its buyer reads them (on the order and in their notification)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from shared.auth import Role
from tests.integration.conftest import Platform
from tests.integration.harness import eventually

# tests/integration/test_zz_no_personal_data_at_rest.py looks for codes of this shape in every
# database dump and log once the suite has run.
CODE_PREFIX = "VCODE-"


def fresh_codes(count: int) -> list[str]:
    return [f"{CODE_PREFIX}{uuid.uuid4().hex[:16].upper()}" for _ in range(count)]


def merchant_token(merchant_id: str) -> dict[str, str]:
    return Platform.bearer(Role.MERCHANT, merchant_id, merchant_id=merchant_id)


async def upload(
    platform: Platform, sku: str, codes: list[str], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    response = await platform.inventory.post(
        f"/v1/products/{sku}/codes",
        content="\n".join(codes).encode(),
        headers={**headers, "Content-Type": "text/plain"},
    )
    return response.status_code, response.json()


async def virtual_product(platform: Platform, merchant_id: str) -> str:
    return await platform.product(available=0, kind="virtual", merchant_id=merchant_id, price_fen=5000)


async def codes_on_order(platform: Platform, order_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await platform.gateway.get(f"/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def delivered(platform: Platform, order: dict[str, Any]) -> list[str]:
    """The codes the buyer reads on the order, once the order shows they were delivered."""
    buyer = Platform.customer(order["customer_id"])
    seen = await eventually(
        lambda: codes_on_order(platform, order["order_id"], buyer),
        lambda found: bool(found["codes"]),
        what=f"the codes of order {order['order_id']} on the buyer's view of it",
    )
    return [code for line in seen["codes"] for code in line["codes"]]


async def test_a_merchant_fills_the_pool_and_only_the_buyer_reads_the_paid_orders_codes(
    platform: Platform,
) -> None:
    merchant_id = await platform.merchant()
    sku = await virtual_product(platform, merchant_id)
    own = merchant_token(merchant_id)
    pool = fresh_codes(3)

    assert await upload(platform, sku, pool, own) == (200, {"sku": sku, "added": 3, "available": 3})
    status, refused = await upload(platform, sku, [*fresh_codes(1), pool[1]], own)
    assert (status, refused["lines"]) == (409, [2]), refused
    status, refused = await upload(platform, sku, [pool[0], pool[0]], own)
    assert (status, refused["lines"]) == (409, [2]), refused
    assert (await upload(platform, sku, fresh_codes(1), merchant_token(await platform.merchant())))[0] == 403
    physical = await platform.product(available=5, merchant_id=merchant_id)
    assert (await upload(platform, physical, fresh_codes(1), own))[0] == 409
    assert (await platform.stock(sku))["available"] == 3, "refused uploads changed nothing"

    order = await platform.place([(sku, 2)])
    await platform.status(order["order_id"], "CONFIRMED")
    codes = await delivered(platform, order)

    assert len(codes) == 2 and set(codes) <= set(pool), codes
    for other in (Platform.admin(), own):
        seen = await codes_on_order(platform, order["order_id"], other)
        assert seen["codes"] == [{"sku": sku, "count": 2, "codes": None}]
    stranger = await platform.gateway.get(
        f"/v1/orders/{order['order_id']}", headers=Platform.customer("cust-someone-else")
    )
    assert stranger.status_code == 404
    assert (await platform.stock(sku))["available"] == 1

    async def codes_notice() -> list[dict[str, Any]]:
        response = await platform.notification.get(
            "/v1/notifications",
            params={"order_id": order["order_id"]},
            headers=Platform.customer(order["customer_id"]),
        )
        assert response.status_code == 200, response.text
        return [n for n in response.json()["items"] if n["template"] == "customer.codes_delivered"]

    [notice] = await eventually(codes_notice, bool, what=f"the codes notice of order {order['order_id']}")
    assert sorted(notice["codes"]) == sorted(codes)
    as_admin = await platform.notifications(order["order_id"])
    assert [n["codes"] for n in as_admin if n["template"] == "customer.codes_delivered"] == [None]


async def test_concurrent_orders_for_a_small_pool_each_get_their_own_codes(platform: Platform) -> None:
    shoppers, pool_size = 10, 6
    merchant_id = await platform.merchant()
    sku = await virtual_product(platform, merchant_id)
    pool = fresh_codes(pool_size)
    assert (await upload(platform, sku, pool, merchant_token(merchant_id)))[0] == 200

    accepted = await asyncio.gather(*(platform.place([(sku, 1)]) for _ in range(shoppers)))
    settled = await asyncio.gather(*(platform.settled(o["order_id"], timeout_s=90) for o in accepted))

    confirmed = [o for o, s in zip(accepted, settled, strict=True) if s["status"] == "CONFIRMED"]
    outcomes = sorted((s["status"], s["reason"]) for s in settled)
    assert len(confirmed) == pool_size, outcomes
    assert outcomes.count(("REJECTED", "OUT_OF_STOCK")) == shoppers - pool_size, outcomes
    given = await asyncio.gather(*(delivered(platform, order) for order in confirmed))
    assert all(len(codes) == 1 for codes in given), given
    handed_out = [code for codes in given for code in codes]
    assert sorted(handed_out) == sorted(pool), "every code went to exactly one order"
    await eventually(
        lambda: platform.stock(sku),
        lambda stock: (stock["available"], stock["reserved"]) == (0, 0),
        what=f"{sku}: no code left and nothing still reserved",
    )
    announced = [e for e in await platform.events("inventory.events") if e.type == "inventory.codes_assigned"]
    mine = {o["order_id"] for o in confirmed}
    assert sorted(e.subject for e in announced if e.subject in mine) == sorted(mine), "one announcement each"
    assert not any(code in str(e.data) for e in announced for code in pool), "codes travel sealed"

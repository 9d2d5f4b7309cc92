"""Recommendations from what was bought together, and a merchant suspended by its refund rate,
end to end: orders through the real saga, refunds produced onto order.events as the order service
will produce them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from shared.contracts import RefundRequested
from shared.kafka import encode, headers_for, new_envelope
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import QUALITY_MIN_ORDERS, eventually


async def _confirmed(platform: Platform, orders: list[tuple[str, list[str]]]) -> list[str]:
    """Each (customer, skus) ordered one unit of each, confirmed; their order ids."""
    placed = await asyncio.gather(
        *(platform.place([(sku, 1) for sku in skus], customer_id=customer) for customer, skus in orders)
    )
    settled = await asyncio.gather(*(platform.settled(order["order_id"]) for order in placed))
    assert [order["status"] for order in settled] == ["CONFIRMED"] * len(orders), settled
    return [order["order_id"] for order in placed]


async def _also_bought(platform: Platform, sku: str) -> list[tuple[str, int]]:
    response = await platform.inventory.get(f"/v1/products/{sku}/also-bought")
    assert response.status_code == 200, response.text
    return [(item["sku"], item["score"]) for item in response.json()["items"]]


async def test_what_was_bought_together_is_recommended_unless_it_cannot_be_bought(platform: Platform) -> None:
    merchant = await platform.merchant()
    other_merchant = await platform.merchant()
    tea, cup, pot = [await platform.product(available=20, merchant_id=merchant) for _ in range(3)]
    last_one = await platform.product(available=1, merchant_id=merchant)
    vase = await platform.product(available=20, merchant_id=other_merchant)
    shopper = f"cust-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:6]

    await _confirmed(
        platform,
        [
            (f"cust-{run}-1", [tea, cup]),
            (f"cust-{run}-2", [tea, pot]),
            (f"cust-{run}-3", [tea, cup]),
            (f"cust-{run}-4", [tea, last_one]),
            (f"cust-{run}-5", [tea, vase]),
            (shopper, [tea]),
        ],
    )
    suspended = await platform.inventory.post(
        f"/v1/merchants/{other_merchant}/suspend",
        json={"reason": "counterfeit vases"},
        headers=platform.admin(),
    )
    assert suspended.status_code == 200, suspended.text

    bought_with_tea = await eventually(
        lambda: _also_bought(platform, tea),
        lambda found: found == [(cup, 2), (pot, 1)],
        what=f"also-bought({tea}) to list the cup twice and the pot once, not the sold-out or suspended",
    )
    assert bought_with_tea == [(cup, 2), (pot, 1)]
    assert await _also_bought(platform, cup) == [(tea, 2)]

    mine = await platform.inventory.get(
        f"/v1/customers/{shopper}/recommendations", headers=platform.customer(shopper)
    )
    assert mine.status_code == 200, mine.text
    items = mine.json()["items"]
    assert [(item["sku"], item["source"]) for item in items[:2]] == [
        (cup, "bought_together"),
        (pot, "bought_together"),
    ]
    recommended = {item["sku"] for item in items}
    assert not recommended & {tea, last_one, vase}, (
        "never what they bought, sold out or of a suspended merchant"
    )
    assert len(items) <= 10

    someone_else = await platform.inventory.get(
        f"/v1/customers/{shopper}/recommendations", headers=platform.customer(f"cust-{run}-1")
    )
    assert someone_else.status_code == 403
    assert someone_else.headers["content-type"] == "application/problem+json"
    too_many = await platform.inventory.get(f"/v1/products/{tea}/also-bought", params={"limit": 51})
    assert too_many.status_code == 422


async def _produce_refund(platform: Platform, order_id: str, customer_id: str) -> None:
    event = RefundRequested(
        order_id=order_id,
        refund_id=f"rf-{uuid.uuid4().hex[:10]}",
        customer_id=customer_id,
        amount_fen=100,
        reason="arrived broken",
    )
    envelope = new_envelope(event, source="order", correlation_id=order_id)
    await platform.produce_raw(
        "order.events", encode(envelope), envelope.subject.encode(), list(headers_for(envelope))
    )


async def _quality(platform: Platform, merchant_id: str) -> dict[str, Any]:
    response = await platform.inventory.get(f"/v1/merchants/{merchant_id}/quality", headers=platform.admin())
    assert response.status_code == 200, response.text
    return dict(response.json())


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
    if response.status_code != 422:
        return ""
    errors: list[dict[str, Any]] = response.json().get("errors") or []
    return next((e["message"] for e in errors if e["field"] == "items.0.sku"), "")


async def test_a_merchant_whose_refund_rate_crosses_the_limit_is_suspended_automatically_and_told_why(
    platform: Platform,
) -> None:
    merchant = await platform.merchant()
    sku = await platform.product(available=20, price_fen=2500, merchant_id=merchant)
    customers = [f"cust-{uuid.uuid4().hex[:8]}" for _ in range(QUALITY_MIN_ORDERS)]
    orders = await _confirmed(platform, [(customer, [sku]) for customer in customers])
    await eventually(
        lambda: _quality(platform, merchant),
        lambda quality: quality["judged"]["orders"] == QUALITY_MIN_ORDERS,
        what=f"inventory to count {merchant}'s {QUALITY_MIN_ORDERS} confirmed orders",
    )

    # One refunded order of three is within the 50% limit; a second refund of it counts no more.
    await _produce_refund(platform, orders[0], customers[0])
    await _produce_refund(platform, orders[0], customers[0])
    within = await eventually(
        lambda: _quality(platform, merchant),
        lambda quality: quality["judged"]["refunded"] == 1,
        what=f"inventory to count the refund of {orders[0]}",
    )
    assert (within["status"], within["at_risk"], within["crossed"]) == ("APPROVED", False, [])

    await _produce_refund(platform, orders[1], customers[1])
    reason = "refund rate 66.7% over 3 orders exceeds the 50% limit"
    suspended = await eventually(
        lambda: _quality(platform, merchant),
        lambda quality: quality["status"] == "SUSPENDED",
        what=f"{merchant} suspended by the quality rules",
    )
    assert suspended["reason"] == reason
    assert suspended["automatic_suspension"]["reason"] == reason
    assert suspended["judged"]["refunded"] == 2 and suspended["judged"]["refund_rate"] == 0.6667
    assert suspended["thresholds"]["max_refund_rate"] == 0.5
    record = await platform.inventory.get(f"/v1/merchants/{merchant}", headers=platform.admin())
    assert [(e["action"], e["by"], e["reason"]) for e in record.json()["history"]][-1] == (
        "suspend",
        "quality-rules",
        reason,
    )
    at_risk = await platform.inventory.get(
        "/v1/merchants/quality", params={"at_risk": "true"}, headers=platform.admin()
    )
    assert merchant in {item["merchant_id"] for item in at_risk.json()["items"]}

    refused = await eventually(
        lambda: _order(platform, sku),
        lambda response: f"is suspended: {reason}" in _sku_error(response),
        what=f"the gateway to refuse {sku} naming {merchant}'s suspension",
    )
    assert refused.headers["content-type"] == "application/problem+json"

    # Reinstated, the merchant is judged on the orders confirmed from then on: a late refund of an
    # order from before counts in its totals but does not suspend it again.
    reinstated = await platform.inventory.post(
        f"/v1/merchants/{merchant}/reinstate",
        json={"reason": "refunds were a courier's fault"},
        headers=platform.admin(),
    )
    assert reinstated.status_code == 200, reinstated.text
    await _produce_refund(platform, orders[2], customers[2])
    after = await eventually(
        lambda: _quality(platform, merchant),
        lambda quality: quality["total"]["refunded"] == 3,
        what=f"inventory to count the late refund of {orders[2]}",
    )
    assert (after["status"], after["judged"]["orders"], after["judged"]["refunded"]) == ("APPROVED", 0, 0)
    assert after["automatic_suspension"] is None

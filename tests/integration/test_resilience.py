"""A service killed or down mid-order: nothing is lost, nothing is doubled, no order waits forever."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from shared.contracts import Envelope
from tests.integration.conftest import Platform
from tests.integration.harness import CHECKS_TIMEOUT_S, eventually


async def test_payment_killed_mid_order_resumes_after_restart(platform: Platform) -> None:
    sku = await platform.product(available=5)
    platform.stack.stop("payment", signal.SIGKILL)
    try:
        order_id = (await platform.place([(sku, 1)]))["order_id"]
        await eventually(
            lambda: platform.order(order_id),
            lambda order: order["status"] == "AWAITING_PAYMENT",
            what="the order to wait for payment while payment is down",
        )
    finally:
        platform.stack.restart("payment")

    order = await platform.settled(order_id, timeout_s=60)
    assert order["status"] == "CONFIRMED"
    payments = (
        await platform.payment.get("/v1/payments", params={"order_id": order_id}, headers=platform.admin())
    ).json()["items"]
    assert len(payments) == 1


async def test_fraud_down_drives_the_order_to_its_deadline_and_releases_stock(platform: Platform) -> None:
    sku = await platform.product(available=3)
    platform.stack.stop("fraud")
    try:
        accepted = await platform.place([(sku, 2)])
        order = await platform.settled(accepted["order_id"], timeout_s=CHECKS_TIMEOUT_S + 20)
        assert (order["status"], order["reason"]) == ("REJECTED", "FRAUD_TIMEOUT")
        await eventually(
            lambda: platform.stock(sku),
            lambda s: s["available"] == 3 and s.get("reserved", 0) == 0,
            what=f"{sku}'s reservation released after the deadline",
        )
    finally:
        platform.stack.restart("fraud")

    # The late score, once fraud is back, changes nothing.
    await eventually(
        lambda: platform.events("fraud.events", accepted["order_id"]),
        lambda events: len(events) >= 1,
        what="fraud to catch up and score the timed-out order",
        timeout_s=90,
    )
    assert (await platform.order(accepted["order_id"]))["status"] == "REJECTED"


async def test_inventory_killed_with_orders_in_flight_keeps_stock_consistent(platform: Platform) -> None:
    sku = await platform.product(available=100)
    placed = await asyncio.gather(*(platform.place([(sku, 1)]) for _ in range(10)))
    platform.stack.stop("inventory", signal.SIGKILL)
    platform.stack.restart("inventory")

    # A transaction the killed process left open holds its documents until the database reaps it
    # (60 s, as in mongod); meanwhile the new inventory retries instead of dead-lettering events,
    # and orders it cannot answer in time end at their stock deadline.
    orders = [await platform.settled(p["order_id"], timeout_s=CHECKS_TIMEOUT_S + 60) for p in placed]
    await platform.caught_up("inventory", "order.events", timeout_s=150)

    for order in orders:
        answers = await inventory_answers(platform, order)
        # The relay may publish an event twice (killed between send and delete), never two reservations.
        reservations = {e.id for e in answers if e.type == "inventory.stock_reserved"}
        assert len(reservations) <= 1, answers
    confirmed = sum(order["status"] == "CONFIRMED" for order in orders)
    stock = await platform.stock(sku)
    assert (stock["available"], stock.get("reserved", 0)) == (100 - confirmed, 0), (confirmed, stock)


async def inventory_answers(platform: Platform, order: dict[str, Any]) -> list[Envelope]:
    """Inventory's events for an order: a confirmed one's end in a commit, any other's exist at all."""
    order_id = order["order_id"]
    last = "inventory.stock_committed" if order["status"] == "CONFIRMED" else None
    return await eventually(
        lambda: platform.events("inventory.events", order_id),
        lambda events: bool(events) and (last is None or events[-1].type == last),
        what=f"inventory's answer to order {order_id} ({order['status']})",
    )

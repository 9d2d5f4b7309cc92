"""An order paid after its reservation ran out: fulfilled from stock taken again, or cancelled and
refunded when the stock went meanwhile; never oversold.

Inventory is restarted with a hold of a few seconds and the payment service is paused (SIGSTOP), so
the reservation expires while the payment is on its way; both are restored whatever happens.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from devstack.stack import wait_until_ready
from shared.contracts import Envelope, ReservationEndReason, StockCommitted, StockRejected, StockReleased
from tests.integration.conftest import Platform
from tests.integration.harness import eventually

# Short enough for a test, and far shorter than the order's own deadlines (its payment alone may
# take minutes): so the reservation surely runs out while payment is paused.
BRIEF_HOLD_S = "3"
# The sweeper releases what ran out this often.
EXPIRY_SCAN_S = "0.5"
# Payment works through what piled up while it was paused, then the saga and inventory answer.
SETTLE_S = 90.0


@asynccontextmanager
async def inventory_holding_briefly(platform: Platform) -> AsyncIterator[None]:
    """Inventory restarted to hold every reservation a few seconds at most; as it was afterwards."""
    original = platform.stack.running["inventory"].spec
    brief = dataclasses.replace(
        original,
        env={
            **original.env,
            "INVENTORY_MAX_HOLD_S": BRIEF_HOLD_S,
            "INVENTORY_RESERVATION_TTL_S": BRIEF_HOLD_S,
            "INVENTORY_EXPIRY_SCAN_INTERVAL_S": EXPIRY_SCAN_S,
        },
    )
    platform.stack.stop("inventory")
    try:
        platform.stack.start(brief)
        wait_until_ready([brief])
        await platform.rejoined("inventory")
        yield
    finally:
        if "inventory" in platform.stack.running:
            platform.stack.stop("inventory")
        platform.stack.start(original)
        wait_until_ready([original])
        await platform.rejoined("inventory")


@asynccontextmanager
async def payment_paused(platform: Platform) -> AsyncIterator[None]:
    """The payment service frozen (SIGSTOP): PaymentRequested waits on its topic until it resumes.

    Paused before the order is placed, not once it awaits payment: a card payment is authorized
    within milliseconds of being requested, sooner than a test could pause it."""
    group = platform.stack.running["payment"].process.pid
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)
        await platform.rejoined("payment")


async def inventory_events(platform: Platform, order_id: str) -> list[Envelope]:
    return await platform.events("inventory.events", order_id)


def expired(events: list[Envelope]) -> bool:
    return any(
        e.type == StockReleased.TYPE and e.data.get("reason") == ReservationEndReason.EXPIRED.value
        for e in events
    )


async def reservation_expired(platform: Platform, order_id: str) -> None:
    await eventually(
        lambda: inventory_events(platform, order_id),
        expired,
        what=f"order {order_id}'s reservation to expire while its payment is paused",
    )


async def held(platform: Platform, sku: str) -> tuple[int, int]:
    stock = await platform.stock(sku)
    return int(stock["available"]), int(stock.get("reserved", 0))


async def test_an_order_paid_after_its_reservation_expired_takes_its_stock_again_once(
    platform: Platform,
) -> None:
    sku = await platform.product(available=5)
    async with inventory_holding_briefly(platform):
        async with payment_paused(platform):
            order_id = (await platform.place([(sku, 2)]))["order_id"]
            await platform.status(order_id, "AWAITING_PAYMENT")
            await reservation_expired(platform, order_id)
            assert await held(platform, sku) == (5, 0), "the expired reservation gave its units back"

        order = await platform.status(order_id, "CONFIRMED", timeout_s=SETTLE_S)
        assert order["reason"] is None
        await eventually(
            lambda: inventory_events(platform, order_id),
            lambda events: any(e.type == StockCommitted.TYPE for e in events),
            what=f"inventory to take order {order_id}'s units again and commit them",
            timeout_s=SETTLE_S,
        )
        await platform.caught_up("inventory", "order.events", timeout_s=SETTLE_S)

    events = await inventory_events(platform, order_id)
    commits = [e for e in events if e.type == StockCommitted.TYPE]
    assert len({e.id for e in commits}) == 1, [e.type for e in events]
    assert not any(e.type == StockRejected.TYPE for e in events), [e.type for e in events]
    assert await held(platform, sku) == (3, 0), "sold exactly once, nothing left reserved"
    assert (await platform.order(order_id))["status"] == "CONFIRMED"


async def test_an_order_paid_after_its_last_unit_was_sold_again_is_cancelled_and_refunded(
    platform: Platform,
) -> None:
    sku = await platform.product(available=1)
    async with payment_paused(platform):
        async with inventory_holding_briefly(platform):
            first = (await platform.place([(sku, 1)]))["order_id"]
            await platform.status(first, "AWAITING_PAYMENT")
            await reservation_expired(platform, first)
        # Inventory holds as usual again: another shopper takes the unit, and keeps it until paid.
        second = (await platform.place([(sku, 1)]))["order_id"]
        await platform.status(second, "AWAITING_PAYMENT")
        assert await held(platform, sku) == (0, 1)

    lost = await platform.status(first, "CANCELLED", timeout_s=SETTLE_S)
    assert lost["reason"] == "RESERVATION_LOST"
    notes = [entry["note"] for entry in lost["timeline"]]
    assert any("sold out" in note and "refunded in full" in note for note in notes), notes
    assert (await platform.status(second, "CONFIRMED", timeout_s=SETTLE_S))["reason"] is None

    payment = await eventually(
        lambda: platform.payment_of(first),
        lambda found: found["status"] in ("voided", "refunded"),
        what=f"the lost order {first}'s payment to be voided or refunded in full",
        timeout_s=SETTLE_S,
    )
    assert payment["status"] in ("voided", "refunded")
    answers = await eventually(
        lambda: inventory_events(platform, first),
        lambda events: any(e.type == StockRejected.TYPE for e in events),
        what=f"inventory to say order {first}'s reservation was lost",
    )
    # Keyed by event id: the outbox relay may publish one event twice, never two decisions.
    [rejection] = {e.id: e for e in answers if e.type == StockRejected.TYPE}.values()
    assert rejection.data["reason"] == "RESERVATION_LOST"
    assert rejection.data["shortages"] == [{"sku": sku, "quantity": 1, "slot_id": None, "available": 0}]
    assert not any(e.type == StockCommitted.TYPE for e in answers), [e.type for e in answers]

    await platform.caught_up("inventory", "order.events", timeout_s=SETTLE_S)
    assert await held(platform, sku) == (0, 0), "the one unit sold once, to the second shopper"

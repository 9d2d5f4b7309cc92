"""Many shoppers at once for the last units: inventory never oversells and never goes negative."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conftest import Platform
from tests.integration.harness import eventually

SHOPPERS = 50
LAST_UNITS = 10


async def test_fifty_shoppers_for_the_last_ten_units_confirm_exactly_ten(platform: Platform) -> None:
    sku = await platform.product(available=LAST_UNITS, price_fen=990)
    seen_available: list[int] = []
    placing = True

    async def watch_stock() -> None:
        while placing:
            seen_available.append((await platform.stock(sku))["available"])
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_stock())
    try:
        accepted = await asyncio.gather(*(platform.place([(sku, 1)]) for _ in range(SHOPPERS)))
        settled: list[dict[str, Any]] = await asyncio.gather(
            *(platform.settled(order["order_id"], timeout_s=90) for order in accepted)
        )
    finally:
        placing = False
        await watcher

    outcomes = sorted((order["status"], order["reason"]) for order in settled)
    assert outcomes.count(("CONFIRMED", None)) == LAST_UNITS, outcomes
    assert outcomes.count(("REJECTED", "OUT_OF_STOCK")) == SHOPPERS - LAST_UNITS, outcomes
    await eventually(
        lambda: platform.stock(sku),
        lambda stock: (stock["available"], stock.get("reserved", 0)) == (0, 0),
        what=f"{sku}: none available and nothing still reserved once every order settled",
    )
    assert seen_available and min(seen_available) >= 0, f"stock went negative: {min(seen_available)}"

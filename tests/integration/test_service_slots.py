"""Bookable services end to end (issue 9 point 7): a slot with capacity 3 takes 3 bookings and
refuses the 4th; a booking that ends unpaid gives its seat back; bad slots are refused up front."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.contracts import StockRejected
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually

LESSON = {"name": "Tea ceremony lesson", "price_fen": 12800, "kind": "service"}


def _slot_times(days_ahead: int, capacity: int) -> dict[str, Any]:
    starts_at = (datetime.now(UTC) + timedelta(days=days_ahead)).replace(microsecond=0)
    return {
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + timedelta(hours=1)).isoformat(),
        "capacity": capacity,
    }


async def _service(platform: Platform, slots: dict[str, int]) -> str:
    """A new service product with `slots` (slot id: capacity), once the gateway can book them."""
    sku = f"SKU-SVC-{uuid.uuid4().hex[:8].upper()}"
    merchant_id = await platform.merchant()
    created = await platform.inventory.put(
        f"/v1/products/{sku}", json={**LESSON, "merchant_id": merchant_id}, headers=platform.admin()
    )
    assert created.status_code == 201, created.text
    for days_ahead, (slot_id, capacity) in enumerate(slots.items(), start=1):
        offered = await platform.inventory.put(
            f"/v1/products/{sku}/slots/{slot_id}",
            json=_slot_times(days_ahead, capacity),
            headers=platform.admin(),
        )
        assert offered.status_code == 201, offered.text

    async def bookable() -> list[str]:
        response = await platform.gateway.get(f"/v1/products/{sku}")
        return [slot["slot_id"] for slot in response.json().get("slots", [])] if response.is_success else []

    await eventually(
        bookable, lambda found: found == list(slots), what=f"{sku}'s slots in the gateway's catalog"
    )
    return sku


async def _book(
    platform: Platform, sku: str, slot_id: str | None, *, token: str = "tok_approve"
) -> httpx.Response:
    item: dict[str, Any] = {"sku": sku, "quantity": 1}
    if slot_id is not None:
        item["slot_id"] = slot_id
    body = {
        "items": [item],
        "shipping_address": ADDRESS,
        "payment": {"method": "bank_card", "token": token},
    }
    return await platform.gateway.post(
        "/v1/orders", json=body, headers=platform.customer(f"cust-{uuid.uuid4().hex[:8]}")
    )


async def _seats(platform: Platform, sku: str) -> dict[str, tuple[int, int, int]]:
    """slot id: (capacity, available, reserved), as inventory's public listing shows them."""
    response = await platform.inventory.get(f"/v1/products/{sku}/slots")
    assert response.status_code == 200, response.text
    return {s["slot_id"]: (s["capacity"], s["available"], s["reserved"]) for s in response.json()["items"]}


async def test_a_slot_with_capacity_three_takes_three_bookings_and_refuses_the_fourth(
    platform: Platform,
) -> None:
    sku = await _service(platform, {"sat-10": 3, "sun-10": 2})

    answers = await asyncio.gather(*(_book(platform, sku, "sat-10") for _ in range(4)))
    assert [answer.status_code for answer in answers] == [202] * 4, [a.text for a in answers]
    settled = await asyncio.gather(
        *(platform.settled(answer.json()["order_id"], timeout_s=60) for answer in answers)
    )

    outcomes = sorted((order["status"], order["reason"]) for order in settled)
    assert outcomes == [("CONFIRMED", None)] * 3 + [("REJECTED", "OUT_OF_STOCK")], outcomes
    for order in settled:
        assert [(line["sku"], line["slot_id"]) for line in order["lines"]] == [(sku, "sat-10")]
    [refused] = [order for order in settled if order["status"] == "REJECTED"]
    assert f"{sku} slot sat-10 (asked 1, 0 left)" in refused["timeline"][-1]["detail"]
    [rejection] = [
        envelope
        for envelope in await platform.events("inventory.events", subject=refused["order_id"])
        if envelope.type == StockRejected.TYPE
    ]
    [shortage] = rejection.data["shortages"]
    assert (shortage["sku"], shortage["slot_id"], shortage["available"]) == (sku, "sat-10", 0)
    # Paid bookings leave the slot's seats for good; the other slot is untouched.
    seats = await eventually(
        lambda: _seats(platform, sku),
        lambda seats: seats["sat-10"] == (3, 0, 0),
        what=f"{sku} sat-10: no seat left and none still held once every booking settled",
    )
    assert seats["sun-10"] == (2, 2, 0)
    assert (await platform.stock(sku))["available"] == 2, "a service's stock is its upcoming slots' seats"


async def test_a_declined_or_cancelled_booking_gives_its_seat_back(platform: Platform) -> None:
    sku = await _service(platform, {"mon-09": 1})

    declined = await _book(platform, sku, "mon-09", token="tok_decline")
    assert declined.status_code == 202, declined.text
    ended = await platform.settled(declined.json()["order_id"])
    assert (ended["status"], ended["reason"]) == ("CANCELLED", "PAYMENT_DECLINED")
    await eventually(
        lambda: _seats(platform, sku),
        lambda seats: seats["mon-09"] == (1, 1, 0),
        what=f"{sku} mon-09's seat back after the declined payment",
    )

    booked = await _book(platform, sku, "mon-09")
    assert booked.status_code == 202, booked.text
    assert (await platform.settled(booked.json()["order_id"]))["status"] == "CONFIRMED"
    # The order is CONFIRMED before inventory has applied the confirmation: wait for the seat to settle.
    await eventually(
        lambda: _seats(platform, sku),
        lambda seats: seats["mon-09"] == (1, 0, 0),
        what="the confirmed booking's seat to leave the held seats for good",
    )


async def test_bad_slots_are_refused_with_a_422_naming_the_sku_and_slot_and_change_nothing(
    platform: Platform,
) -> None:
    sku = await _service(platform, {"tue-14": 2})
    physical = await platform.product(available=5)

    refusals = {
        "no slot": (await _book(platform, sku, None), f"{sku} is a service: name the slot to book (slot_id)"),
        "unknown slot": (await _book(platform, sku, "wed-99"), f"{sku} has no slot wed-99 open for booking"),
        "not a service": (
            await _book(platform, physical, "tue-14"),
            f"{physical} is a physical product: it has no slots",
        ),
    }
    for case, (response, message) in refusals.items():
        assert response.status_code == 422, (case, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        errors = response.json()["errors"]
        assert {"field": "items.0.slot_id", "message": message, "location": "body"} in errors, (case, errors)

    past = await platform.inventory.put(
        f"/v1/products/{sku}/slots/tue-14", json=_slot_times(-1, 2), headers=platform.admin()
    )
    too_big = await platform.inventory.put(
        f"/v1/products/{sku}/slots/tue-14", json=_slot_times(1, 10_001), headers=platform.admin()
    )
    on_physical = await platform.inventory.put(
        f"/v1/products/{physical}/slots/tue-14", json=_slot_times(1, 2), headers=platform.admin()
    )
    assert (past.status_code, too_big.status_code, on_physical.status_code) == (422, 422, 409)
    assert await _seats(platform, sku) == {"tue-14": (2, 2, 0)}

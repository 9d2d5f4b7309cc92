"""At-least-once delivery made exactly-once in effect: duplicates are applied once, poison goes to the DLQ."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import httpx
import orjson

from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually


async def test_redelivered_order_placed_is_applied_once(platform: Platform) -> None:
    sku = await platform.product(available=10)
    order_id = (await platform.place([(sku, 2)]))["order_id"]
    assert (await platform.settled(order_id))["status"] == "CONFIRMED"
    await eventually(
        lambda: platform.stock(sku), lambda s: s.get("reserved", 0) == 0, what="the sale committed"
    )

    await redeliver(platform, "order.events", order_id, "order.placed", seen_by=platform.inventory)

    assert (await platform.stock(sku))["available"] == 8
    reserved = [
        e for e in await platform.events("inventory.events", order_id) if e.type == "inventory.stock_reserved"
    ]
    assert len(reserved) == 1
    order = await platform.order(order_id)
    assert order["status"] == "CONFIRMED"
    assert [step["cause"] for step in order["timeline"]].count("inventory.stock_reserved") == 1


async def test_redelivered_payment_authorized_confirms_once(platform: Platform) -> None:
    sku = await platform.product(available=10)
    order_id = (await platform.place([(sku, 1)]))["order_id"]
    await platform.settled(order_id)
    # Its timeline is complete once the card's capture on confirmation is recorded too.
    before = await eventually(
        lambda: platform.order(order_id),
        lambda order: order["payment"]["status"] == "captured",
        what=f"order {order_id}'s payment to be captured",
    )

    await redeliver(platform, "payment.events", order_id, "payment.authorized", seen_by=platform.gateway)

    after = await platform.order(order_id)
    assert after["timeline"] == before["timeline"]
    confirmed = [e for e in await platform.events("order.events", order_id) if e.type == "order.confirmed"]
    assert len(confirmed) == 1


async def test_same_idempotency_key_gives_the_same_order(platform: Platform) -> None:
    sku = await platform.product(available=10)
    customer_id = f"cust-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = await platform.place([(sku, 1)], customer_id=customer_id, headers=key)
    second = await platform.place([(sku, 1)], customer_id=customer_id, headers=key)

    assert first == second
    await platform.settled(first["order_id"])
    listed = (await platform.gateway.get("/v1/orders", headers=platform.customer(customer_id))).json()
    assert [o["order_id"] for o in listed["items"]] == [first["order_id"]]
    assert (await platform.stock(sku))["available"] == 9

    other_body = await platform.gateway.post(
        "/v1/orders",
        headers={**key, **platform.customer(customer_id)},
        json={
            "customer_id": customer_id,
            "items": [{"sku": sku, "quantity": 2}],
            "shipping_address": ADDRESS,
            "payment": {"method": "bank_card", "token": "tok_approve"},
        },
    )
    assert other_body.status_code == 422
    assert other_body.json()["title"] == "Idempotency key reused"


ORDER_EVENTS_CONSUMERS = {b"inventory", b"payment", b"notification", b"fraud", b"analytics"}


def envelope(event_type: str, version: int, data: Mapping[str, object]) -> bytes:
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "version": version,
            "source": "test",
            "time": "2026-11-26T00:00:00Z",
            "subject": "poison",
            "correlation_id": "poison",
            "data": data,
        }
    )


async def test_no_bad_record_stops_a_service_each_is_dead_lettered_and_orders_still_confirm(
    platform: Platform,
) -> None:
    run = uuid.uuid4().hex[:8]
    order = {"order_id": f"o-{run}"}
    poison: dict[str, tuple[bytes, list[tuple[str, bytes | None]]]] = {
        "version 0": (envelope("order.placed", 0, order), []),
        "version -5": (envelope("order.confirmed", -5, order), []),
        "unknown type": (envelope("order.teleported", 1, order), []),
        "null header": (envelope("order.placed", 1, order), [("ce_type", None), ("origin", b"test")]),
        "garbage": (b"\x00\xff this is not an event", [("origin", b"test")]),
        "nested array": (b"[" * 100_000 + b"]" * 100_000, []),
    }
    for name, (value, headers) in poison.items():
        await platform.produce_raw("order.events", value, f"{run}/{name}".encode(), headers)

    async def dead_letters() -> dict[str, list[dict[str, bytes | None]]]:
        found: dict[str, list[dict[str, bytes | None]]] = {name: [] for name in poison}
        for record in await platform.raw_records("order.events.dlq"):
            key = (record.key or b"").decode(errors="replace")
            if key.startswith(f"{run}/"):
                found[key.split("/", 1)[1]].append(dict(record.headers))
        return found

    letters = await eventually(
        dead_letters,
        lambda found: all({h["dlq_consumer"] for h in hs} >= ORDER_EVENTS_CONSUMERS for hs in found.values()),
        what="every order.events consumer to dead-letter every poison record",
        timeout_s=60,
    )
    for name, letters_of_record in letters.items():
        for letter in letters_of_record:
            assert letter["dlq_error"], f"{name}: the dead letter carries its error"
            assert letter["dlq_source_topic"] == b"order.events"
    assert all(h["ce_type"] is None for h in letters["null header"]), "the original headers travel along"
    assert b"versions start at 1" in (letters["version -5"][0]["dlq_error"] or b"")

    for client in platform.services:
        assert (await client.get("/healthz")).status_code == 200, f"{client.base_url} is still up"
    sku = await platform.product(available=2)
    placed = await platform.settled((await platform.place([(sku, 1)]))["order_id"])
    assert placed["status"] == "CONFIRMED", "a new order still goes through after the poison"


async def redeliver(
    platform: Platform, topic: str, order_id: str, event_type: str, *, seen_by: httpx.AsyncClient
) -> None:
    """Send an order's event again, byte for byte, as a producer retry or a relay restart would,
    and wait until the consuming service counts it as a duplicate."""
    [record] = [rec for env, rec in await platform.records(topic, order_id) if env.type == event_type]
    before = await platform.metric(seen_by, "events_duplicate_total", type=event_type)
    await platform.produce_raw(topic, record.value, record.key, list(record.headers))
    await eventually(
        lambda: platform.metric(seen_by, "events_duplicate_total", type=event_type),
        lambda count: count >= before + 1,
        what=f"{seen_by.base_url} to count the redelivered {event_type} as a duplicate",
    )


async def test_unscorable_order_is_dead_lettered_and_fraud_keeps_scoring(platform: Platform) -> None:
    order_id = f"unscorable-{uuid.uuid4().hex[:8]}"
    # A well-formed envelope whose order cannot be read, on fraud's own re-keyed topic.
    poison = {
        "id": str(uuid.uuid4()),
        "type": "order.placed",
        "version": 1,
        "source": "order",
        "time": "2026-11-25T12:00:00Z",
        "subject": order_id,
        "correlation_id": order_id,
        "causation_id": None,
        "data": {"order_id": order_id},
    }
    await platform.produce_raw("fraud-orders-by-customer", orjson.dumps(poison), order_id.encode(), [])

    async def fraud_dead_letters() -> list[dict[str, bytes]]:
        return [
            dict(r.headers)
            for r in await platform.raw_records("order.events.dlq")
            if r.key == order_id.encode()
        ]

    [letter] = await eventually(
        fraud_dead_letters, lambda found: len(found) == 1, what=f"fraud to dead-letter {order_id}"
    )
    assert letter["dlq_consumer"] == b"fraud"
    assert letter["dlq_source_topic"] == b"fraud-orders-by-customer"
    assert b"cannot score" in letter["dlq_error"]

    sku = await platform.product(available=1)
    order = await platform.settled((await platform.place([(sku, 1)]))["order_id"])
    assert order["status"] == "CONFIRMED", "fraud still scores the orders after the poison one"

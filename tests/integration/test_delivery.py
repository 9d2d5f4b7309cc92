"""At-least-once delivery made exactly-once in effect: duplicates are applied once, poison goes to the DLQ."""

from __future__ import annotations

import uuid

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
    before = await platform.settled(order_id)

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
    listed = (await platform.gateway.get("/v1/orders", params={"customer_id": customer_id})).json()
    assert [o["order_id"] for o in listed["items"]] == [first["order_id"]]
    assert (await platform.stock(sku))["available"] == 9

    other_body = await platform.gateway.post(
        "/v1/orders",
        headers=key,
        json={
            "customer_id": customer_id,
            "items": [{"sku": sku, "quantity": 2}],
            "shipping_address": ADDRESS,
            "payment": {"method": "bank_card", "token": "tok_approve"},
        },
    )
    assert other_body.status_code == 422
    assert other_body.json()["title"] == "Idempotency key reused"


async def test_poison_event_is_dead_lettered_with_its_error_and_does_not_block(platform: Platform) -> None:
    key = f"poison-{uuid.uuid4().hex[:8]}".encode()
    await platform.produce_raw("order.events", b"\x00 this is not an event", key, [("origin", b"test")])

    async def dead_letters() -> list[dict[str, bytes]]:
        consumer_records = await platform.raw_records("order.events.dlq")
        return [dict(r.headers) for r in consumer_records if r.key == key]

    letters = await eventually(
        dead_letters,
        lambda found: {h.get("dlq_consumer") for h in found} >= {b"inventory", b"payment", b"notification"},
        what="inventory, payment and notification to dead-letter the poison record",
    )
    for headers in letters:
        assert headers["origin"] == b"test", "the original headers travel with the dead letter"
        assert headers["dlq_error"]
        assert headers["dlq_source_topic"] == b"order.events"

    # The partition is not blocked: a new order still goes through.
    sku = await platform.product(available=2)
    order = await platform.settled((await platform.place([(sku, 1)]))["order_id"])
    assert order["status"] == "CONFIRMED"


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

"""At-least-once delivery made exactly-once in effect: duplicates are applied once, poison goes to the DLQ."""

from __future__ import annotations

import uuid

from tests.integration.conftest import Platform
from tests.integration.harness import eventually


async def test_redelivered_order_placed_is_applied_once(platform: Platform) -> None:
    sku = await platform.product(available=10)
    order_id = (await platform.place([(sku, 2)]))["order_id"]
    assert (await platform.settled(order_id))["status"] == "CONFIRMED"
    await eventually(
        lambda: platform.stock(sku), lambda s: s.get("reserved", 0) == 0, what="the sale committed"
    )
    [(placed, record)] = [
        (env, rec)
        for env, rec in await platform.records("order.events", order_id)
        if env.type == "order.placed"
    ]
    duplicates_before = await platform.metric(
        platform.inventory, "events_duplicate_total", type="order.placed"
    )

    # The same record again, byte for byte, as a producer retry or a relay restart would send it.
    await platform.produce_raw("order.events", record.value, record.key, list(record.headers))

    await eventually(
        lambda: platform.metric(platform.inventory, "events_duplicate_total", type="order.placed"),
        lambda count: count >= duplicates_before + 1,
        what="inventory to see the redelivered OrderPlaced as a duplicate",
    )
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
    [(_, record)] = [
        (env, rec)
        for env, rec in await platform.records("payment.events", order_id)
        if env.type == "payment.authorized"
    ]
    duplicates_before = await platform.metric(
        platform.gateway, "events_duplicate_total", type="payment.authorized"
    )

    await platform.produce_raw("payment.events", record.value, record.key, list(record.headers))

    await eventually(
        lambda: platform.metric(platform.gateway, "events_duplicate_total", type="payment.authorized"),
        lambda count: count >= duplicates_before + 1,
        what="the order service to see the redelivered PaymentAuthorized as a duplicate",
    )
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
            "shipping_address": {
                "name": "Han Meimei",
                "phone": "13912345678",
                "province": "Guangdong",
                "city": "Shenzhen",
                "district": "Nanshan",
                "line1": "9 Keyuan Rd",
                "postal_code": "518000",
            },
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

"""An order's way through all five services, as a client, a merchant and an analyst observe it."""

from __future__ import annotations

from tests.integration.conftest import Platform
from tests.integration.harness import eventually


async def test_in_stock_order_with_approving_card_is_confirmed(platform: Platform) -> None:
    merchant = await platform.merchant()
    sku = await platform.product(available=10, price_fen=2580, merchant_id=merchant)

    accepted = await platform.place([(sku, 3)])
    assert accepted["status"] == "PENDING"
    assert accepted["order_no"]

    order = await platform.settled(accepted["order_id"])
    assert order["status"] == "CONFIRMED", order
    assert order["reason"] is None
    assert order["total_fen"] == 3 * 2580
    assert [(line["sku"], line["quantity"]) for line in order["lines"]] == [(sku, 3)]
    causes = [step["cause"] for step in order["timeline"]]
    assert causes[0] == "order.placed"
    assert set(causes[1:3]) == {"inventory.stock_reserved", "fraud.scored"}
    # The card's capture on confirmation may be recorded after it, leaving the order CONFIRMED.
    assert causes[3:5] == ["order.payment_requested", "payment.authorized"]
    assert causes[5:] in ([], ["payment.captured"])
    assert [step["status"] for step in order["timeline"]][3:5] == ["AWAITING_PAYMENT", "CONFIRMED"]

    # Stock went down exactly once, and the reservation became a sale.
    stock = await eventually(
        lambda: platform.stock(sku),
        lambda s: s.get("reserved", 0) == 0,
        what=f"{sku}'s reservation to be committed",
    )
    assert stock["available"] == 7

    notes = await eventually(
        lambda: platform.notifications(accepted["order_id"]),
        lambda items: len(items) >= 2,
        what="merchant and customer notifications",
    )
    assert {(n["role"], n["recipient"], n["status"]) for n in notes} == {
        ("merchant", merchant, "sent"),
        ("customer", order["customer_id"], "sent"),
    }

    payment = await eventually(
        lambda: platform.payment_of(accepted["order_id"]),
        lambda payment: payment["status"] == "captured",
        what="the card payment to be captured on confirmation",
    )
    assert (payment["amount_fen"], payment["captured_fen"]) == (3 * 2580, 3 * 2580)


async def test_out_of_stock_is_rejected_and_no_payment_is_attempted(platform: Platform) -> None:
    sku = await platform.product(available=1)

    accepted = await platform.place([(sku, 2)])
    order = await platform.settled(accepted["order_id"])

    assert (order["status"], order["reason"]) == ("REJECTED", "OUT_OF_STOCK")
    assert (await platform.stock(sku))["available"] == 1
    order_events = [e.type for e in await platform.events("order.events", accepted["order_id"])]
    assert order_events == ["order.placed", "order.rejected"]
    payments = (
        await platform.payment.get(
            "/v1/payments", params={"order_id": accepted["order_id"]}, headers=platform.admin()
        )
    ).json()
    assert payments["items"] == []
    rejected = await platform.events("inventory.events", accepted["order_id"])
    assert [e.type for e in rejected] == ["inventory.stock_rejected"]
    assert rejected[0].data["shortages"] == [{"sku": sku, "quantity": 2, "slot_id": None, "available": 1}]


async def test_one_short_line_holds_nothing_of_the_others(platform: Platform) -> None:
    plenty = await platform.product(available=50)
    sold_out = await platform.product(available=0)

    order = await platform.settled((await platform.place([(plenty, 1), (sold_out, 1)]))["order_id"])

    assert (order["status"], order["reason"]) == ("REJECTED", "OUT_OF_STOCK")
    assert (await platform.stock(plenty))["available"] == 50


async def test_declined_card_cancels_and_returns_the_stock(platform: Platform) -> None:
    sku = await platform.product(available=5)

    accepted = await platform.place([(sku, 2)], token="tok_decline")
    order = await platform.settled(accepted["order_id"])

    assert (order["status"], order["reason"]) == ("CANCELLED", "PAYMENT_DECLINED")
    assert "CARD_DECLINED" in order["timeline"][-1]["detail"]
    stock = await eventually(
        lambda: platform.stock(sku),
        lambda s: s["available"] == 5 and s.get("reserved", 0) == 0,
        what=f"{sku}'s stock back to 5 after the decline",
    )
    assert stock["available"] == 5
    customer_notes = await eventually(
        lambda: platform.notifications(accepted["order_id"]),
        lambda items: len(items) == 1,
        what="the customer's cancellation notice",
    )
    assert customer_notes[0]["role"] == "customer"


async def test_fraud_reject_rejects_and_releases_the_reservation(platform: Platform) -> None:
    sku = await platform.product(available=4)

    accepted = await platform.place([(sku, 1)], customer_id="cust-blocked-demo")
    order = await platform.settled(accepted["order_id"])

    assert (order["status"], order["reason"]) == ("REJECTED", "FRAUD")
    await eventually(
        lambda: platform.stock(sku),
        lambda s: s["available"] == 4 and s.get("reserved", 0) == 0,
        what=f"{sku}'s stock back to 4 after the fraud reject",
    )
    order_events = [e.type for e in await platform.events("order.events", accepted["order_id"])]
    assert "order.payment_requested" not in order_events


async def test_two_orders_for_the_last_unit_one_wins(platform: Platform) -> None:
    sku = await platform.product(available=1)

    first = await platform.place([(sku, 1)])
    second = await platform.place([(sku, 1)])
    outcomes = sorted(
        [
            (await platform.settled(first["order_id"]))["status"],
            (await platform.settled(second["order_id"]))["status"],
        ]
    )

    assert outcomes == ["CONFIRMED", "REJECTED"]
    stock = await eventually(
        lambda: platform.stock(sku),
        lambda s: s.get("reserved", 0) == 0,
        what=f"{sku}'s reservation committed",
    )
    assert stock["available"] == 0


async def test_a_tiered_price_applies_from_its_quantity(platform: Platform) -> None:
    tiers = [{"min_quantity": 3, "unit_price_fen": 900}, {"min_quantity": 10, "unit_price_fen": 800}]
    sku = await platform.product(available=20, price_fen=1000, price_tiers=tiers)
    listed = await platform.gateway.get(f"/v1/products/{sku}")
    assert listed.json()["price_tiers"] == tiers

    placed = {quantity: await platform.place([(sku, quantity)]) for quantity in (2, 3, 10)}
    settled = {
        quantity: await platform.settled(accepted["order_id"]) for quantity, accepted in placed.items()
    }

    assert {q: order["status"] for q, order in settled.items()} == {
        2: "CONFIRMED",
        3: "CONFIRMED",
        10: "CONFIRMED",
    }
    assert {q: (order["total_fen"], order["lines"][0]["unit_price_fen"]) for q, order in settled.items()} == {
        2: (2000, 1000),
        3: (2700, 900),
        10: (8000, 800),
    }

"""What an analyst sees on the order stream: every order's events, full envelopes, in order."""

from __future__ import annotations

import uuid

from tests.integration.conftest import Platform


async def test_order_events_replay_from_the_beginning_in_order_per_order(platform: Platform) -> None:
    sku = await platform.product(available=3)
    expected = {
        (await platform.place([(sku, 1)]))["order_id"]: [
            "order.placed",
            "order.payment_requested",
            "order.confirmed",
        ],
        (await platform.place([(sku, 1)], token="tok_decline"))["order_id"]: [
            "order.placed",
            "order.payment_requested",
            "order.cancelled",
        ],
        (await platform.place([(sku, 9)]))["order_id"]: ["order.placed", "order.rejected"],
    }
    for order_id in expected:
        await platform.settled(order_id)

    records = await platform.records("order.events")
    for order_id, types in expected.items():
        mine = [(env, record) for env, record in records if env.subject == order_id]
        assert [env.type for env, _ in mine] == types, f"order {order_id}"
        assert len({record.partition for _, record in mine}) == 1, "one order's events share a partition"
        placed = mine[0][0]
        for env, record in mine:
            assert record.key == order_id.encode()
            assert uuid.UUID(env.id)
            assert env.version >= 1 and env.source == "order"
            assert env.time.tzinfo is not None
            assert env.correlation_id == placed.correlation_id
            assert env.data["order_id"] == order_id
            headers = dict(record.headers)
            assert headers["ce_type"] == env.type.encode()
            assert headers["ce_id"] == env.id.encode()
        assert placed.causation_id is None
        assert all(env.causation_id for env, _ in mine[1:]), "later events name their cause"
        assert placed.data["total_fen"] == sum(
            line["quantity"] * line["unit_price_fen"] for line in placed.data["lines"]
        )

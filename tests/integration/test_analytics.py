"""Revenue per merchant per minute, as an analyst reads it from analytics.merchant-revenue and the API."""

from __future__ import annotations

import operator
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial

from shared.auth import Role
from shared.contracts import Envelope, OrderConfirmed
from tests.integration.conftest import Platform
from tests.integration.harness import eventually

Minutes = dict[tuple[str, datetime], tuple[int, int]]  # (merchant id, minute) -> (orders, revenue in fen)


def minute_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def expected_minutes(confirmations: list[Envelope], merchants: set[str]) -> Minutes:
    """Per merchant and minute of the OrderConfirmed envelope time: the orders holding the merchant's
    lines, and the sum of those lines' totals."""
    minutes: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    for envelope in confirmations:
        order = OrderConfirmed.model_validate(envelope.data)
        for merchant_id in merchants:
            own = [line.line_total_fen for line in order.lines if line.merchant_id == merchant_id]
            if own:
                counted = minutes[(merchant_id, minute_of(envelope.time))]
                counted[0] += 1
                counted[1] += sum(own)
    return {key: (orders, revenue) for key, (orders, revenue) in minutes.items()}


async def api_minutes(
    platform: Platform, merchant_id: str, start: datetime, end: datetime
) -> list[tuple[datetime, int, int]]:
    """(minute, orders, revenue) of a merchant's minutes in [start, end), as an analyst reads them."""
    response = await platform.analytics.get(
        f"/v1/analytics/merchants/{merchant_id}/revenue",
        params={"from": start.isoformat(), "to": end.isoformat()},
        headers=platform.bearer(Role.ANALYST, "test-analyst"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    minutes = [
        (datetime.fromisoformat(row["window_start"]), row["orders"], row["revenue_fen"])
        for row in body["minutes"]
    ]
    assert body["totals"]["revenue_fen"] == sum(revenue for _, _, revenue in minutes)
    return minutes


async def test_the_per_minute_revenue_topic_and_api_match_the_confirmed_orders_of_each_minute(
    platform: Platform,
) -> None:
    tea, cups = await platform.merchant(), await platform.merchant()
    green = await platform.product(available=20, price_fen=1999, merchant_id=tea)
    oolong = await platform.product(available=20, price_fen=350, merchant_id=tea)
    mug = await platform.product(available=20, price_fen=500, merchant_id=cups)
    placed = [
        await platform.place([(green, 2), (mug, 1)]),
        await platform.place([(oolong, 3)]),
        await platform.place([(mug, 4)]),
        await platform.place([(green, 1), (oolong, 1)]),
    ]
    order_ids = {order["order_id"] for order in placed}
    for order in placed:
        assert (await platform.settled(order["order_id"]))["status"] == "CONFIRMED"

    async def confirmed() -> dict[str, Envelope]:
        """Each order's OrderConfirmed once (a relay may publish one twice, with the same id)."""
        return {
            envelope.id: envelope
            for envelope in await platform.events("order.events")
            if envelope.type == OrderConfirmed.TYPE and envelope.subject in order_ids
        }

    # The status is CONFIRMED once stored; the outbox relay publishes the event just after.
    confirmations = await eventually(
        confirmed,
        lambda found: len(found) == len(placed),
        what="every order's OrderConfirmed on order.events",
    )
    expected = expected_minutes(list(confirmations.values()), {tea, cups})
    assert {merchant for merchant, _ in expected} == {tea, cups}
    assert sum(revenue for _, revenue in expected.values()) == 2 * 1999 + 500 + 3 * 350 + 4 * 500 + 1999 + 350

    async def published() -> Minutes:
        """The latest record per merchant and minute, as a reader of the topic keeps them."""
        latest: Minutes = {}
        for envelope, record in await platform.records("analytics.merchant-revenue"):
            if envelope.subject not in (tea, cups):
                continue
            assert envelope.type == "analytics.merchant_revenue"
            assert record.key == envelope.subject.encode(), "keyed by merchant id"
            data = envelope.data
            minute = datetime.fromisoformat(data["window_start"])
            latest[(data["merchant_id"], minute)] = (data["orders"], data["revenue_fen"])
        return latest

    await eventually(
        published,
        lambda found: found == expected,
        what=f"analytics.merchant-revenue to hold, per merchant and minute, {expected}",
    )

    first = min(minute for _, minute in expected)
    end = max(minute for _, minute in expected) + timedelta(minutes=1)
    for merchant_id in (tea, cups):
        wanted = sorted(
            (minute, orders, revenue)
            for (merchant, minute), (orders, revenue) in expected.items()
            if merchant == merchant_id
        )
        await eventually(
            partial(api_minutes, platform, merchant_id, first, end),
            partial(operator.eq, wanted),
            what=f"the analytics API to answer {merchant_id}'s minutes {wanted}",
        )

    own = await platform.analytics.get(
        f"/v1/analytics/merchants/{tea}/revenue", headers=platform.bearer(Role.MERCHANT, tea, merchant_id=tea)
    )
    other = await platform.analytics.get(
        f"/v1/analytics/merchants/{cups}/revenue",
        headers=platform.bearer(Role.MERCHANT, tea, merchant_id=tea),
    )
    assert own.status_code == 200 and other.status_code == 403

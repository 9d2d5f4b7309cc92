"""The analysts' live stream on the gateway (GET /v1/streams/orders): a client that drops and
reconnects with Last-Event-ID gets every record of order.events exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from shared.auth import Role
from shared.contracts import Envelope
from shared.contracts.privacy import for_analysts
from shared.kafka import PoisonRecord, decode_record
from tests.integration.conftest import Platform
from tests.integration.harness import eventually

STREAM = "/v1/streams/orders"
FINAL_EVENT = {"CONFIRMED": "order.confirmed", "REJECTED": "order.rejected", "CANCELLED": "order.cancelled"}
# Reads may wait for the saga to publish; the keep-alive comes every 15 s.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=30.0)


@dataclass(frozen=True)
class Sse:
    event: str
    id: str
    data: str


async def read_until(
    response: httpx.Response, into: list[Sse], done: Callable[[list[Sse]], bool], *, what: str
) -> None:
    """Append the stream's events to `into` until `done(into)`; fail naming `what` was awaited."""
    fields: dict[str, str] = {}
    try:
        async with asyncio.timeout(60):
            async for line in response.aiter_lines():
                if line == "":
                    if "event" in fields:
                        into.append(Sse(fields["event"], fields.get("id", ""), fields.get("data", "")))
                        if done(into):
                            return
                    fields = {}
                elif not line.startswith(":"):  # a comment is the keep-alive
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
    except TimeoutError:
        raise AssertionError(
            f"waited 60 s for {what}; the stream gave {len(into)} events, the last: {into[-1:]}"
        ) from None
    raise AssertionError(f"the stream ended before {what}; it gave {len(into)} events")


def positions(token: str) -> dict[int, int]:
    """A resume token's positions: `0:15,1:7` → {0: 15, 1: 7} (the next offset of each partition)."""
    return {int(p): int(o) for p, o in (pair.split(":") for pair in token.split(","))}


def located(events: list[Sse]) -> list[tuple[int, int, Sse]]:
    """Each record event with the partition and offset it came from: the one partition whose
    position its id moved past, compared with the id before it (the stream opens with `position`)."""
    assert events and events[0].event == "position", "a stream opens with its position"
    found = []
    before = positions(events[0].id)
    for event in events[1:]:
        after = positions(event.id)
        moved = [p for p in after if after[p] != before.get(p)]
        assert len(moved) == 1, f"{event.event} moved partitions {moved} ({before} → {after})"
        [partition] = moved
        found.append((partition, after[partition] - 1, event))
        before = after
    return found


async def test_the_order_stream_resumes_after_the_last_event_id_without_a_gap_or_a_duplicate(
    platform: Platform,
) -> None:
    analyst = platform.bearer(Role.ANALYST, "ana-1")
    sku = await platform.product(available=50)
    first_orders = [await platform.place([(sku, 1)]) for _ in range(3)]
    waited_for = {order["order_id"] for order in first_orders}

    def placed_all(events: list[Sse]) -> bool:
        placed = {orjson.loads(e.data)["subject"] for e in events if e.event == "order.placed"}
        return waited_for <= placed

    first: list[Sse] = []
    async with platform.gateway.stream(
        "GET", STREAM, params={"from": "beginning"}, headers=analyst, timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        await read_until(response, first, placed_all, what="the order.placed of the first three orders")
    last_id = first[-1].id

    await eventually(
        lambda: platform.metric(platform.gateway, "gateway_streams_open"),
        lambda still_open: still_open == 0,
        what="the gateway to stop the first stream's consumer once the client left",
    )
    later_orders = [await platform.place([(sku, 1)]) for _ in range(2)]
    final_events = {
        order["order_id"]: FINAL_EVENT[(await platform.settled(order["order_id"]))["status"]]
        for order in first_orders + later_orders
    }

    async def published() -> set[tuple[str, str]]:
        return {(e.subject, e.type) for e in await platform.events("order.events")}

    await eventually(
        published,
        lambda seen: (
            seen >= {(order_id, "order.placed") for order_id in final_events}
            and seen >= set(final_events.items())
        ),
        what="each order's order.placed and final event on order.events",
    )
    records = await platform.raw_records("order.events")
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)

    def caught_up(events: list[Sse]) -> bool:
        reached = positions(events[-1].id)
        return all(reached.get(partition, 0) >= end for partition, end in ends.items())

    second: list[Sse] = []
    async with platform.gateway.stream(
        "GET",
        STREAM,
        params={"from": "beginning"},  # sent again on reconnecting, as EventSource does: the id wins
        headers={**analyst, "Last-Event-ID": last_id},
        timeout=STREAM_TIMEOUT,
    ) as response:
        assert response.status_code == 200, await response.aread()
        await read_until(response, second, caught_up, what=f"the stream to reach the topic's end {ends}")
    assert second[0].event == "position" and second[0].id == last_id, "it resumes where the client was"

    streamed = [
        (partition, offset, event)
        for partition, offset, event in located(first) + located(second)
        if offset < ends.get(partition, 0)  # a record published after the snapshot may follow
    ]
    assert not [event for _, _, event in streamed if event.event == "gap"]
    where = [(partition, offset) for partition, offset, _ in streamed]
    assert len(where) == len(set(where)), "no record twice"
    for partition in ends:
        in_stream = [offset for p, offset in where if p == partition]
        in_topic = [record.offset for record in records if record.partition == partition]
        assert in_stream == in_topic, f"partition {partition}: every record once, in the topic's order"

    by_place: dict[tuple[int, int], Any] = {(r.partition, r.offset): r for r in records}
    for partition, offset, event in streamed:
        try:
            envelope = decode_record(by_place[partition, offset]).envelope
        except PoisonRecord:
            assert event.event == "undecodable", f"{partition}:{offset} is not an event"
            assert orjson.loads(event.data)["offset"] == offset
            continue
        assert event.event == envelope.type
        streamed_envelope = Envelope.model_validate_json(event.data)
        assert streamed_envelope == for_analysts(envelope), "the topic's envelope, for analysts"
        assert "phone" not in event.data and '"token"' not in event.data, "no personal data or credentials"

    valid = [envelope for envelope, record in await platform.records("order.events") if is_event(record)]
    sent = [Envelope.model_validate_json(e.data) for _, _, e in streamed if e.event != "undecodable"]
    assert sorted(e.id for e in sent) == sorted(e.id for e in valid), "exactly what the topic holds"
    for order_id, final in final_events.items():
        assert {e.type for e in sent if e.subject == order_id} >= {"order.placed", final}, order_id


def is_event(record: Any) -> bool:
    try:
        decode_record(record)
    except PoisonRecord:
        return False
    return True


async def test_only_analysts_and_admins_may_open_the_order_stream(platform: Platform) -> None:
    customer = await platform.gateway.get(STREAM, headers=platform.customer("cust-stream"))
    assert customer.status_code == 403, customer.text
    assert customer.headers["content-type"] == "application/problem+json"
    anonymous = await platform.gateway.get(STREAM)
    assert anonymous.status_code == 401, anonymous.text
    malformed = await platform.gateway.get(
        STREAM, headers={**platform.bearer(Role.ANALYST, "ana-1"), "Last-Event-ID": "yesterday"}
    )
    assert malformed.status_code == 422, malformed.text
    assert malformed.json()["errors"][0]["field"] == "last-event-id"
    async with platform.gateway.stream(
        "GET", STREAM, headers=platform.admin(), timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status_code == 200, await response.aread()
        opened: list[Sse] = []
        await read_until(response, opened, lambda events: True, what="the opening position event")
        assert opened[0].event == "position"

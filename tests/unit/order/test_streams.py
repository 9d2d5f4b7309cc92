"""The analysts' event stream (GET /v1/streams/orders) over ASGI, on an in-memory topic.

The topic is a fake of the aiokafka consumer calls the stream makes; each request runs through the
app as main.py wires it, with a client that hangs up once it has the events it wanted, so a
disconnect is exercised the way sse-starlette sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage

from services.order.api import rate_limited
from services.order.streams import (
    InvalidResumeToken,
    StreamLimits,
    build_router,
    parse_resume_token,
    resume_token,
)
from services.order.throttle import Throttle
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import (
    Envelope,
    Event,
    OrderCancelled,
    OrderEndReason,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    PaymentRequested,
)
from shared.contracts.privacy import for_analysts
from shared.contracts.topics import ORDER_EVENTS
from shared.http import create_app
from shared.kafka import encode, headers_for, new_envelope
from shared.settings import SharedSettings
from tests.unit.samples import ADDRESS, T0

pytestmark = pytest.mark.unit

SETTINGS = SharedSettings()
ISSUER = TokenIssuer(SETTINGS)
PROBLEM = "application/problem+json"


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


ANALYST = bearer(Principal("ana-1", Role.ANALYST))
ADMIN = bearer(Principal("admin-1", Role.ADMIN))
CUSTOMER = bearer(Principal("c-1", Role.CUSTOMER))
MERCHANT = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))
GUEST = bearer(Principal("c-9", Role.GUEST, order_id="o-9"))


# --- an in-memory order.events ----------------------------------------------------------------


@dataclass
class FakeTopic:
    """order.events in memory: partitions of records, some maybe deleted by retention."""

    partitions: int = 3
    records: dict[int, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)
    # The first offset still kept per partition (retention deletes below it).
    log_start: dict[int, int] = field(default_factory=dict)
    appended: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[FakeConsumer] = field(default_factory=list)
    # What the broker does to the consumers made from now on.
    start_error: BaseException | None = None
    start_hangs: bool = False
    read_error: BaseException | None = None

    def __post_init__(self) -> None:
        for number in range(self.partitions):
            self.records.setdefault(number, [])
            self.log_start.setdefault(number, 0)

    def append(self, partition: int, value: bytes, *, timestamp_ms: int = 0, key: bytes = b"k") -> None:
        log = self.records[partition]
        log.append(
            ConsumerRecord(
                topic=ORDER_EVENTS,
                partition=partition,
                offset=len(log),
                timestamp=timestamp_ms,
                timestamp_type=0,
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=len(key),
                serialized_value_size=len(value),
                headers=[],
            )
        )
        self.appended.set()

    def publish(self, partition: int, envelope: Envelope, *, timestamp_ms: int = 0) -> Envelope:
        self.append(partition, encode(envelope), timestamp_ms=timestamp_ms, key=envelope.subject.encode())
        self.records[partition][-1].headers = headers_for(envelope)
        return envelope

    def end(self, partition: int) -> int:
        return len(self.records[partition])

    def consumer(self) -> FakeConsumer:
        made = FakeConsumer(self)
        self.consumers.append(made)
        return made


@dataclass
class FakeConsumer:
    """The aiokafka consumer calls the stream makes, with auto_offset_reset="none" semantics;
    a getmany returns at most `per_call` records of each partition, so partitions interleave."""

    topic: FakeTopic
    per_call: int = 2
    started: bool = False
    stopped: bool = False
    assigned: list[TopicPartition] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)

    async def start(self) -> None:
        if self.topic.start_hangs:
            await asyncio.Event().wait()
        if self.topic.start_error is not None:
            raise self.topic.start_error
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def topics(self) -> set[str]:
        return {ORDER_EVENTS}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.topic.records) if topic == ORDER_EVENTS else None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition.partition] = offset

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.topic.log_start[tp.partition] for tp in partitions}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.topic.end(tp.partition) for tp in partitions}

    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        found: dict[TopicPartition, Any] = {}
        for tp, millis in timestamps.items():
            hits = [r for r in self.topic.records[tp.partition] if r.timestamp >= millis]
            found[tp] = OffsetAndTimestamp(hits[0].offset, hits[0].timestamp) if hits else None
        return found

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        assert self.started and not self.stopped, "read from a consumer that is not running"
        if self.topic.read_error is not None:
            raise self.topic.read_error
        for _ in range(2):
            out_of_range = {
                tp: self.positions[tp.partition]
                for tp in self.assigned
                if not self.topic.log_start[tp.partition]
                <= self.positions[tp.partition]
                <= self.topic.end(tp.partition)
            }
            if out_of_range:
                raise OffsetOutOfRangeError(out_of_range)
            batch = {}
            for tp in self.assigned:
                position = self.positions[tp.partition]
                records = self.topic.records[tp.partition][position : position + self.per_call]
                if records:
                    batch[tp] = records
                    self.positions[tp.partition] = records[-1].offset + 1
            if batch:
                return batch
            self.topic.appended.clear()
            try:
                await asyncio.wait_for(self.topic.appended.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
        return {}


def rejected(order_id: str) -> Envelope:
    return envelope_of(
        OrderRejected(order_id=order_id, order_no="20261126-000001", customer_id="c-1", reason=FRAUD)
    )


def cancelled(order_id: str) -> Envelope:
    return envelope_of(
        OrderCancelled(order_id=order_id, order_no="20261126-000002", customer_id="c-1", reason=FRAUD)
    )


FRAUD = OrderEndReason.FRAUD


def envelope_of(event: Event) -> Envelope:
    return new_envelope(event, source="order", correlation_id=f"corr-{event.subject()}")


def filled(per_partition: Mapping[int, int], partitions: int = 3) -> tuple[FakeTopic, list[Envelope]]:
    """A topic with `per_partition[p]` events on partition p; the events in publishing order."""
    topic = FakeTopic(partitions=partitions)
    published = []
    for partition, count in per_partition.items():
        for n in range(count):
            published.append(topic.publish(partition, rejected(f"o-{partition}-{n}")))
    return topic, published


# --- driving the app --------------------------------------------------------------------------


def gateway(topic: FakeTopic, limits: StreamLimits | None = None) -> FastAPI:
    """The order service's app with the stream router, as main.py wires it."""
    app = create_app("order", readiness={}, token_verifier=TokenVerifier(SETTINGS))
    app.include_router(
        rate_limited(
            build_router(topic.consumer, limits or StreamLimits(ping_s=60)),
            Throttle(MemoryStorage()),
            "600/minute",
        )
    )
    return app


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[SseEvent]:
        return parse_events(self.body)

    @property
    def envelopes(self) -> list[SseEvent]:
        return [e for e in self.events if e.event not in ("position", "undecodable", "gap")]

    def problem(self, status: int) -> dict[str, Any]:
        assert self.status == status, self.body
        assert self.headers["content-type"] == PROBLEM
        body: dict[str, Any] = orjson.loads(self.body)
        return body


def parse_events(body: bytes) -> list[SseEvent]:
    found = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "event" in fields or "data" in fields:
            found.append(SseEvent(fields.get("event", "message"), fields.get("id"), fields.get("data", "")))
    return found


async def request(
    app: FastAPI,
    headers: Mapping[str, str] = ANALYST,
    query: Iterable[tuple[str, str]] = (),
    *,
    until: Callable[[bytes], bool] | None = None,
    hang_up: asyncio.Event | None = None,
    timeout_s: float = 5.0,
) -> Exchange:
    """GET /v1/streams/orders as a client that hangs up as soon as `until(body so far)` holds or
    `hang_up` is set; without either it reads until the server ends the response."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/streams/orders",
        "raw_path": b"/v1/streams/orders",
        "root_path": "",
        "query_string": urlencode(list(query)).encode(),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    gone = hang_up or asyncio.Event()
    asked = False
    status = 0
    response_headers: dict[str, str] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update((k.decode(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if until is not None and until(bytes(body)):
                gone.set()

    try:
        async with asyncio.timeout(timeout_s):
            await app(scope, receive, send)
    except TimeoutError:
        raise AssertionError(
            f"the stream did not end or give the awaited events within {timeout_s} s; got {bytes(body)!r}"
        ) from None
    return Exchange(status, response_headers, bytes(body))


def having(count: int) -> Callable[[bytes], bool]:
    """Until `count` events other than the opening `position` have arrived."""
    return lambda body: len([e for e in parse_events(body) if e.event != "position"]) >= count


def just_opened(body: bytes) -> bool:
    return any(e.event == "position" for e in parse_events(body))


def ids(events: Iterable[SseEvent]) -> list[str]:
    return [event.json()["id"] for event in events]


# --- the resume token -------------------------------------------------------------------------


def test_a_resume_token_lists_every_partitions_next_offset_in_partition_order() -> None:
    assert resume_token({2: 22, 0: 15, 1: 7}) == "0:15,1:7,2:22"
    assert parse_resume_token("0:15,1:7,2:22") == {0: 15, 1: 7, 2: 22}
    assert parse_resume_token(" 3:0 ") == {3: 0}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "latest",
        "15",
        "0:15,",
        "0:15;1:7",
        "0:-1",
        "0:1.5",
        "0:15,0:16",
        "-1:3",
        "0:99999999999999999999",
        "0:9223372036854775808",
        ",".join(f"{n}:1" for n in range(2000)),
    ],
)
def test_anything_but_a_token_this_stream_hands_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidResumeToken):
        parse_resume_token(token)


async def test_a_malformed_last_event_id_is_a_422_naming_the_header_and_opens_no_consumer() -> None:
    topic, _ = filled({0: 2})
    answer = await request(gateway(topic), {**ANALYST, "Last-Event-ID": "0:15;1:7"})
    body = answer.problem(422)
    assert body["errors"][0]["field"] == "last-event-id"
    assert body["errors"][0]["location"] == "header"
    assert "0:15,1:7,2:22" in body["detail"], "the detail shows what a token looks like"
    assert topic.consumers == []


@pytest.mark.parametrize(
    ("token", "complaint"),
    [("0:1,7:0", "no partition 7"), ("0:1,1:9", "past the end"), ("0:3,1:0,2:0", "past the end")],
)
async def test_a_token_from_another_topic_is_a_422_and_its_consumer_is_stopped(
    token: str, complaint: str
) -> None:
    topic, _ = filled({0: 2, 1: 1})
    app = gateway(topic, StreamLimits(max_connections=1, ping_s=60))
    answer = await request(app, {**ANALYST, "Last-Event-ID": token})
    assert complaint in answer.problem(422)["detail"]
    assert [c.stopped for c in topic.consumers] == [True]
    assert (await request(app, until=just_opened)).status == 200, "the refused stream freed its slot"


# --- who may read -----------------------------------------------------------------------------


async def test_without_a_token_the_stream_is_401_and_other_roles_are_403() -> None:
    topic, _ = filled({0: 1})
    app = gateway(topic)
    unauthenticated = await request(app, {})
    unauthenticated.problem(401)
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    (await request(app, {"Authorization": "Bearer not-a-jwt"})).problem(401)
    for role in (CUSTOMER, MERCHANT, GUEST):
        assert "analyst" in (await request(app, role)).problem(403)["detail"]
    assert topic.consumers == []


@pytest.mark.parametrize("caller", [ANALYST, ADMIN])
async def test_an_analyst_or_an_admin_reads_the_stream(caller: dict[str, str]) -> None:
    topic, published = filled({0: 1, 1: 1})
    answer = await request(gateway(topic), caller, [("from", "beginning")], until=having(2))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert sorted(ids(answer.envelopes)) == sorted(e.id for e in published)


# --- what an event carries --------------------------------------------------------------------


async def test_each_event_is_named_by_its_type_and_carries_the_whole_envelope() -> None:
    topic = FakeTopic()
    placed = topic.publish(1, rejected("o-1"))
    answer = await request(gateway(topic), query=[("from", "beginning")], until=having(1))
    [event] = answer.envelopes
    assert event.event == "order.rejected"
    assert Envelope.model_validate(event.json()) == placed
    assert event.json() == orjson.loads(encode(placed))
    assert parse_resume_token(event.id or "") == {0: 0, 1: 1, 2: 0}


async def test_the_stream_opens_with_its_position_so_a_client_can_resume_before_any_event() -> None:
    topic, _ = filled({0: 3, 2: 1})
    answer = await request(gateway(topic), until=just_opened)
    [opened] = answer.events
    assert opened.event == "position"
    assert opened.id == "0:3,1:0,2:1", "without Last-Event-ID or from, it starts at the end (live)"
    assert opened.json() == {"positions": {"0": 3, "1": 0, "2": 1}}
    assert b"retry: 3000" in answer.body


async def test_a_record_that_is_not_an_event_comes_as_undecodable_with_where_it_lies() -> None:
    topic = FakeTopic(partitions=1)
    topic.append(0, b"\x00\xff not an event")
    topic.append(0, orjson.dumps({**rejected("o-1").model_dump(mode="json"), "type": "order.teleported"}))
    good = topic.publish(0, rejected("o-2"))
    answer = await request(gateway(topic), query=[("from", "beginning")], until=having(3))
    first, second, third = answer.events[1:]
    assert (first.event, first.json()["partition"], first.json()["offset"]) == ("undecodable", 0, 0)
    assert "JSONDecodeError" in first.json()["error"]
    assert (second.event, second.json()["offset"]) == ("undecodable", 1)
    assert "order.teleported" in second.json()["error"]
    assert (third.event, third.json()["id"]) == ("order.rejected", good.id)
    assert [e.id for e in answer.events[1:]] == ["0:1", "0:2", "0:3"]


# --- where it starts and what it lets through -------------------------------------------------


async def test_live_by_default_it_sends_what_is_published_after_it_opened() -> None:
    topic, _ = filled({0: 2, 1: 2})
    app = gateway(topic)
    fresh = cancelled("o-new")

    def publish_once_open(body: bytes) -> bool:
        if just_opened(body) and topic.end(2) == 0:
            topic.publish(2, fresh)
        return having(1)(body)

    answer = await request(app, until=publish_once_open)
    assert ids(answer.envelopes) == [fresh.id]
    assert answer.envelopes[0].id == "0:2,1:2,2:1"


async def test_since_starts_at_the_first_event_published_at_or_after_that_time() -> None:
    topic = FakeTopic(partitions=2)
    millis = int(T0.timestamp() * 1000)
    topic.publish(0, rejected("o-old"), timestamp_ms=millis - 1)
    later = [
        topic.publish(0, rejected("o-at"), timestamp_ms=millis),
        topic.publish(1, rejected("o-after"), timestamp_ms=millis + 60_000),
    ]
    app = gateway(topic)
    answer = await request(app, query=[("since", T0.isoformat())], until=having(2))
    assert answer.events[0].id == "0:1,1:0"
    assert sorted(ids(answer.envelopes)) == sorted(e.id for e in later)
    future = await request(app, query=[("since", (T0 + timedelta(days=1)).isoformat())], until=just_opened)
    assert future.events[0].id == "0:2,1:1", "nothing after that time: it starts at the end"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("since", "2026-11-26T03:00:00")], "since"),  # no time zone
        ([("from", "yesterday")], "from"),
        ([("from", "beginning"), ("since", "2026-11-26T03:00:00Z")], "since"),
        ([("type", "order.confirmed"), ("type", "payment.authorized")], "type"),
        ([("order_id", "o 1; drop")], "order_id"),
    ],
)
async def test_bad_query_parameters_are_a_422_naming_the_parameter(
    query: list[tuple[str, str]], field: str
) -> None:
    topic, _ = filled({0: 1})
    body = (await request(gateway(topic), query=query)).problem(422)
    assert field in {error["field"] for error in body["errors"]}
    assert topic.consumers == []


async def test_an_unknown_type_filter_lists_the_types_the_topic_carries() -> None:
    topic, _ = filled({0: 1})
    detail = (await request(gateway(topic), query=[("type", "order.shipped")])).problem(422)["detail"]
    assert "order.shipped" in detail
    assert "order.confirmed" in detail and "order.placed" in detail


async def test_type_filters_let_through_only_those_types_and_no_undecodable_records() -> None:
    topic = FakeTopic(partitions=2)
    topic.publish(0, rejected("o-1"))
    wanted = [topic.publish(1, cancelled("o-2"))]
    topic.append(0, b"garbage")
    wanted.append(topic.publish(0, cancelled("o-3")))
    topic.publish(1, rejected("o-4"))
    last = topic.publish(1, cancelled("o-5"))
    wanted.append(last)
    answer = await request(
        gateway(topic),
        query=[("from", "beginning"), ("type", "order.cancelled"), ("type", "order.cancelled")],
        until=lambda body: last.id.encode() in body,
    )
    assert [e.event for e in answer.events[1:]] == ["order.cancelled"] * 3
    assert sorted(ids(answer.envelopes)) == sorted(e.id for e in wanted)


async def test_an_order_filter_lets_through_only_that_orders_events() -> None:
    topic = FakeTopic(partitions=1)
    topic.publish(0, rejected("o-1"))
    mine = topic.publish(0, cancelled("o-2"))
    topic.publish(0, rejected("o-3"))
    last = topic.publish(0, rejected("o-2"))
    answer = await request(
        gateway(topic), query=[("from", "beginning"), ("order_id", "o-2")], until=having(2)
    )
    assert ids(answer.envelopes) == [mine.id, last.id]
    assert answer.envelopes[-1].id == "0:4"


# --- resuming ---------------------------------------------------------------------------------


async def test_resuming_after_any_event_gives_the_rest_with_no_gap_and_no_duplicate() -> None:
    topic, published = filled({0: 4, 1: 1, 2: 3})
    partition_of = {e.id: int(e.subject.split("-")[1]) for e in published}
    app = gateway(topic)
    whole = await request(app, query=[("from", "beginning")], until=having(len(published)))
    for cut, last_seen in enumerate(whole.envelopes, start=1):
        rest_count = len(published) - cut
        rest = await request(
            app,
            {**ANALYST, "Last-Event-ID": last_seen.id or ""},
            [("from", "beginning")],  # what an EventSource sends again on reconnecting: the token wins
            until=having(rest_count) if rest_count else just_opened,
        )
        union = ids(whole.envelopes[:cut]) + ids(rest.envelopes)
        # Partitions interleave as their records are fetched; within one, the order is the topic's.
        for partition in range(3):
            assert [i for i in union if partition_of[i] == partition] == [
                e.id for e in published if partition_of[e.id] == partition
            ], f"partition {partition} resuming after event {cut} ({last_seen.id})"
        assert len(union) == len(published)


async def test_a_stream_resumed_while_more_is_published_misses_nothing() -> None:
    topic, published = filled({0: 2, 1: 2})
    app = gateway(topic)
    first = await request(app, query=[("from", "beginning")], until=having(3))
    received = first.envelopes[:3]
    for number in range(3):
        published.append(topic.publish(number % 3, cancelled(f"o-late-{number}")))
    rest = await request(
        app, {**ANALYST, "Last-Event-ID": received[-1].id or ""}, until=having(len(published) - 3)
    )
    assert sorted(ids(received) + ids(rest.envelopes)) == sorted(e.id for e in published)
    assert len(set(ids(received) + ids(rest.envelopes))) == len(published)


async def test_a_partition_the_token_does_not_name_is_read_from_its_beginning() -> None:
    topic, published = filled({0: 1, 1: 1, 2: 1})
    answer = await request(gateway(topic), {**ANALYST, "Last-Event-ID": "0:1,1:1"}, until=having(1))
    assert ids(answer.envelopes) == [published[2].id]


async def test_events_deleted_by_retention_before_a_resume_are_reported_as_a_gap() -> None:
    topic, published = filled({0: 5, 1: 1})
    topic.log_start[0] = 3
    answer = await request(gateway(topic), {**ANALYST, "Last-Event-ID": "0:1,1:1"}, until=having(3))
    gap, *rest = answer.events[1:]
    assert gap.event == "gap"
    assert (gap.json()["partition"], gap.json()["from_offset"], gap.json()["to_offset"]) == (0, 1, 3)
    assert gap.id == "0:3,1:1,2:0"
    assert ids(rest) == [e.id for e in published[3:5]]


async def test_events_deleted_while_the_stream_lags_are_reported_as_a_gap_and_it_goes_on() -> None:
    topic, published = filled({0: 4})
    app = gateway(topic)

    def delete_after_the_first(body: bytes) -> bool:
        if having(1)(body):
            topic.log_start[0] = 3  # retention deletes offsets 0-2 before offset 2 was fetched
        return having(3)(body)

    answer = await request(app, query=[("from", "beginning")], until=delete_after_the_first)
    kinds = [e.event for e in answer.events[1:]]
    # The fake fetched offsets 0-1 together; the stream then finds offset 2 gone.
    assert kinds == ["order.rejected", "order.rejected", "gap", "order.rejected"]
    gap = answer.events[3]
    assert (gap.json()["from_offset"], gap.json()["to_offset"], gap.id) == (2, 3, "0:3,1:0,2:0")
    assert ids(answer.envelopes) == [published[0].id, published[1].id, published[3].id]


async def test_a_topic_recreated_under_the_stream_ends_it_and_the_reconnect_is_told_why() -> None:
    topic, _ = filled({0: 3})
    app = gateway(topic)

    def recreate_once_open(body: bytes) -> bool:
        if just_opened(body) and topic.end(0) == 3:
            topic.records[0] = []
            topic.appended.set()
        return False

    ended = await request(app, until=recreate_once_open)  # returns because the server ends it
    assert [e.event for e in ended.events] == ["position"]
    assert [c.stopped for c in topic.consumers] == [True]
    token = ended.events[0].id or ""
    assert "past the end" in (await request(app, {**ANALYST, "Last-Event-ID": token})).problem(422)["detail"]


# --- connections ------------------------------------------------------------------------------


async def test_a_client_hanging_up_stops_its_consumer_and_frees_its_slot() -> None:
    topic, _ = filled({0: 3})
    app = gateway(topic, StreamLimits(max_connections=1, ping_s=60))
    await request(app, query=[("from", "beginning")], until=having(1))
    [consumer] = topic.consumers
    assert consumer.stopped
    again = await request(app, until=just_opened)
    assert again.status == 200
    assert all(c.stopped for c in topic.consumers)


async def test_past_the_stream_limit_a_503_with_retry_after_until_one_closes() -> None:
    topic, _ = filled({0: 1})
    app = gateway(topic, StreamLimits(max_connections=2, ping_s=60))
    hang_up = asyncio.Event()
    opened = [asyncio.Event(), asyncio.Event()]

    def signalling(event: asyncio.Event) -> Callable[[bytes], bool]:
        def until(body: bytes) -> bool:
            if just_opened(body):
                event.set()
            return False

        return until

    holding = [asyncio.create_task(request(app, until=signalling(e), hang_up=hang_up)) for e in opened]
    async with asyncio.timeout(5):
        for event in opened:
            await event.wait()
    refused = await request(app)
    assert "all 2 event streams" in refused.problem(503)["detail"]
    assert refused.headers["retry-after"] == "5"
    assert len(topic.consumers) == 2, "a refused stream opens no consumer"
    hang_up.set()
    await asyncio.gather(*holding)
    assert (await request(app, until=just_opened)).status == 200


async def test_an_idle_stream_sends_keep_alive_comments() -> None:
    topic, _ = filled({0: 1})
    answer = await request(gateway(topic, StreamLimits(ping_s=0.05)), until=lambda body: b"\n: ping" in body)
    assert answer.status == 200
    assert [e.event for e in answer.events] == ["position"]


async def test_a_broker_that_fails_or_does_not_answer_is_a_503_and_frees_the_slot() -> None:
    topic, _ = filled({0: 1})
    app = gateway(topic, StreamLimits(max_connections=1, ping_s=60, open_timeout_s=0.05))
    topic.start_error = KafkaConnectionError("Unable to bootstrap")
    assert (await request(app)).problem(503)["title"] == "Busy"
    topic.start_error, topic.start_hangs = None, True
    answer = await request(app)
    assert "does not answer" in answer.problem(503)["detail"]
    assert answer.headers["retry-after"] == "5"
    assert [c.stopped for c in topic.consumers] == [True, True]
    topic.start_hangs = False
    assert (await request(app, until=just_opened)).status == 200


async def test_a_read_failure_ends_the_stream_for_the_client_to_resume_and_stops_the_consumer() -> None:
    topic, _ = filled({0: 1})
    topic.read_error = KafkaConnectionError("connection lost")
    answer = await request(gateway(topic))  # returns only because the server ends the response
    assert answer.status == 200
    assert [e.event for e in answer.events] == ["position"]
    assert [c.stopped for c in topic.consumers] == [True]


def test_the_openapi_document_describes_the_event_stream_and_its_problems() -> None:
    topic, _ = filled({0: 1})
    operation = gateway(topic).openapi()["paths"]["/v1/streams/orders"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"401", "403", "422", "429", "503"} <= set(operation["responses"])
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"last-event-id", "from", "since", "type", "order_id"} <= set(parameters)
    assert parameters["last-event-id"]["in"] == "header"


def test_analysts_get_the_region_of_an_address_and_no_payment_token() -> None:
    placed = new_envelope(
        OrderPlaced(
            order_id="o-1",
            order_no="20261126-000001",
            customer_id="c-1",
            lines=[OrderLine(sku="TEA", name="Tea", merchant_id="m-1", quantity=1, unit_price_fen=100)],
            total_fen=100,
            payment_method=PaymentMethod.BANK_CARD,
            shipping_address=ADDRESS,
            placed_at=T0,
        ),
        source="order",
        correlation_id="o-1",
    )
    requested = new_envelope(
        PaymentRequested(
            order_id="o-1",
            customer_id="c-1",
            amount_fen=100,
            method=PaymentMethod.BANK_CARD,
            sealed_token="x25519.k0.sealed-secret",
        ),
        source="order",
        correlation_id="o-1",
    )

    seen = for_analysts(placed)

    assert seen.data["shipping_address"] == {"province": "Zhejiang", "city": "Hangzhou", "district": "Xihu"}
    assert {k: v for k, v in seen.data.items() if k != "shipping_address"} == {
        k: v for k, v in placed.data.items() if k != "shipping_address"
    }
    assert seen.model_dump(exclude={"data"}) == placed.model_dump(exclude={"data"})
    assert "sealed_token" in requested.data and "sealed_token" not in for_analysts(requested).data

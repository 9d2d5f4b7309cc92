"""`GET /v1/streams/orders`: the `order.events` topic as Server-Sent Events, for analysts.

Each connection reads the topic with a consumer of its own outside any consumer group (every
partition assigned by hand, as an analyst's tool would), so it never moves the services' committed
offsets nor makes their groups rebalance.

Every event's `id` is a resume token: for each partition, the offset of the next record to read once
this event is delivered (`0:15,1:7,2:22`). Positions only move forward in the order events are sent,
so a client reconnecting with `Last-Event-ID` continues right after the last event it received,
across all partitions, with nothing skipped and nothing sent twice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol

import anyio
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from fastapi import APIRouter, Depends, Header, Query
from prometheus_client import Gauge
from pydantic import AwareDatetime
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from shared.auth import Principal, Role, require_role
from shared.contracts import REGISTRY, Envelope
from shared.contracts.privacy import for_analysts
from shared.contracts.topics import ORDER_EVENTS
from shared.http import Problem, problem_responses
from shared.kafka import PoisonRecord, decode_record, encode, make_plain_consumer
from shared.logging import get_logger
from shared.settings import SharedSettings

log = get_logger(__name__)

STREAMS_OPEN = Gauge("gateway_streams_open", "Analysts' event streams open on this process")

# The types a client may filter on: those this topic carries.
ORDER_EVENT_TYPES = frozenset(name for name, cls in REGISTRY.items() if cls.TOPIC == ORDER_EVENTS)
# How long a client waits before reconnecting after the stream drops (the SSE `retry` field).
RECONNECT_DELAY_MS = 3000
# The 503's Retry-After when every stream slot is taken or the broker does not answer.
BUSY_RETRY_AFTER_S = 5
# How long a getmany waits before the loop goes round again; latency is the consumer's
# fetch_max_wait_ms, this only bounds how long one call holds the loop.
POLL_TIMEOUT_MS = 1000
# Bounds the consumer's stop when a stream closes, so a dead broker cannot hold a slot.
CLOSE_TIMEOUT_S = 5.0
MAX_TOKEN_CHARS = 8192
_TOKEN = re.compile(r"[0-9]{1,6}:[0-9]{1,19}(?:,[0-9]{1,6}:[0-9]{1,19})*")
MAX_OFFSET = 2**63 - 1

Positions = dict[int, int]


# --- the resume token --------------------------------------------------------------------------


class InvalidResumeToken(ValueError):
    """A Last-Event-ID that is not a position this stream handed out."""


def resume_token(positions: Mapping[int, int]) -> str:
    """`0:15,1:7,2:22`: for each partition, the offset of the next record to read."""
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(positions.items()))


def parse_resume_token(text: str) -> Positions:
    """The positions in a resume token, or InvalidResumeToken saying what is wrong with it."""
    text = text.strip()
    if len(text) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(text):
        raise InvalidResumeToken(
            "not a resume token of this stream: expected `partition:offset` pairs separated by commas, "
            "e.g. `0:15,1:7,2:22` (the id of the last event received)"
        )
    positions: Positions = {}
    for pair in text.split(","):
        partition, offset = (int(part) for part in pair.split(":"))
        if partition in positions:
            raise InvalidResumeToken(f"partition {partition} appears twice")
        if offset > MAX_OFFSET:
            raise InvalidResumeToken(f"offset {offset} of partition {partition} is out of range")
        positions[partition] = offset
    return positions


# --- where a stream starts and what it lets through --------------------------------------------


class StartFrom(StrEnum):
    BEGINNING = "beginning"
    END = "end"


@dataclass(frozen=True)
class Start:
    """Where reading starts: a resume token's positions, a time, or one end of the topic."""

    resume: Positions | None = None
    since: datetime | None = None
    origin: StartFrom = StartFrom.END

    def describe(self) -> str:
        if self.resume is not None:
            return f"after {resume_token(self.resume)}"
        if self.since is not None:
            return f"since {self.since.isoformat()}"
        return self.origin.value


@dataclass(frozen=True)
class EventFilter:
    """Which events a client asked for; no filter lets everything through."""

    types: frozenset[str] = frozenset()
    order_id: str | None = None

    @property
    def narrows(self) -> bool:
        return bool(self.types) or self.order_id is not None

    def admits(self, envelope: Envelope) -> bool:
        return (not self.types or envelope.type in self.types) and (
            self.order_id is None or envelope.subject == self.order_id
        )


# --- reading the topic -------------------------------------------------------------------------


class EventLog(Protocol):
    """What a stream needs of a Kafka consumer (aiokafka's AIOKafkaConsumer, without a group)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def topics(self) -> set[str]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, Any]: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...


def plain_consumers(settings: SharedSettings) -> Callable[[], EventLog]:
    """Makes one consumer per stream: no group (partitions are assigned by hand), nothing
    committed, and an out-of-range position reported instead of silently reset."""

    def make() -> EventLog:
        consumer: EventLog = make_plain_consumer(settings, "order-gateway-stream", auto_offset_reset="none")
        return consumer

    return make


@dataclass
class Gap:
    """Records a stream can no longer read: retention deleted them before the stream got there."""

    partition: int
    requested: int
    earliest: int


class OrderEventStream:
    """One client's read of `order.events`: opens at a start, yields SSE events, closes once."""

    def __init__(
        self,
        consumer: EventLog,
        event_filter: EventFilter,
        *,
        max_records: int,
        on_close: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._filter = event_filter
        self._max_records = max_records
        self._on_close = on_close
        self._closed = False
        self._partitions: dict[int, TopicPartition] = {}
        self._gaps: list[Gap] = []
        self.positions: Positions = {}
        self.delivered = 0

    async def open(self, start: Start) -> None:
        """Start the consumer and seek every partition to where `start` says.

        A resume token naming partitions the topic lacks, or positions past a partition's end, was
        not handed out by this topic (it may have been recreated): InvalidResumeToken."""
        await self._consumer.start()
        await self._consumer.topics()  # loads the metadata partitions_for_topic reads
        numbers = self._consumer.partitions_for_topic(ORDER_EVENTS)
        if not numbers:
            raise Problem(
                503,
                "Busy",
                f"the topic {ORDER_EVENTS} is not available yet; retry after the Retry-After seconds",
                code="busy",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        self._partitions = {number: TopicPartition(ORDER_EVENTS, number) for number in sorted(numbers)}
        assigned = list(self._partitions.values())
        self._consumer.assign(assigned)
        beginnings = _by_number(await self._consumer.beginning_offsets(assigned))
        ends = _by_number(await self._consumer.end_offsets(assigned))
        if start.resume is not None:
            positions = self._resumed(start.resume, beginnings, ends)
        elif start.since is not None:
            positions = await self._since(start.since, beginnings, ends)
        elif start.origin is StartFrom.BEGINNING:
            positions = beginnings
        else:
            positions = ends
        for number, offset in positions.items():
            self._consumer.seek(self._partitions[number], offset)
        self.positions = dict(positions)

    def _resumed(self, token: Positions, beginnings: Positions, ends: Positions) -> Positions:
        unknown = sorted(set(token) - set(self._partitions))
        if unknown:
            raise InvalidResumeToken(
                f"{ORDER_EVENTS} has no partition {', '.join(map(str, unknown))} "
                f"(it has {len(self._partitions)}): the token is not from this stream"
            )
        ahead = [
            f"{number}:{offset} (end {ends[number]})"
            for number, offset in token.items()
            if offset > ends[number]
        ]
        if ahead:
            raise InvalidResumeToken(
                f"positions past the end of {ORDER_EVENTS}: {', '.join(ahead)}; the token is not from "
                "this stream, or the topic was recreated"
            )
        positions: Positions = {}
        for number in self._partitions:
            # A partition added after the token was issued holds only newer events: all of them.
            wanted = token.get(number, beginnings[number])
            if wanted < beginnings[number]:
                self._gaps.append(Gap(number, wanted, beginnings[number]))
                wanted = beginnings[number]
            positions[number] = wanted
        return positions

    async def _since(self, since: datetime, beginnings: Positions, ends: Positions) -> Positions:
        millis = int(since.timestamp() * 1000)
        found = await self._consumer.offsets_for_times(dict.fromkeys(self._partitions.values(), millis))
        positions: Positions = {}
        for number, tp in self._partitions.items():
            hit = found.get(tp)
            # No record at or after that time: start at the end. (Some brokers answer timestamp -1
            # with offset 0 instead of no offset.)
            if hit is None or hit.timestamp < 0:
                positions[number] = ends[number]
            else:
                positions[number] = min(max(hit.offset, beginnings[number]), ends[number])
        return positions

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """A `position` event at once (so a client has an id to resume from before any event
        arrives), then every record's event as it arrives."""
        yield ServerSentEvent(
            data=_json({"positions": {str(n): offset for n, offset in sorted(self.positions.items())}}),
            event="position",
            id=resume_token(self.positions),
            retry=RECONNECT_DELAY_MS,
        )
        for gap in self._gaps:
            yield self._gap_event(gap)
        self._gaps.clear()
        while True:
            try:
                polled = await self._consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self._max_records
                )
            except OffsetOutOfRangeError as error:
                gaps = await self._skip_deleted(error)
                if gaps is None:
                    # Past the end: the topic was recreated under the stream. The client reconnects
                    # with its Last-Event-ID and is told so (422) rather than sent another topic.
                    log.error("stream_position_lost", error=str(error)[:500])
                    return
                for gap in gaps:
                    yield self._gap_event(gap)
                continue
            except KafkaError as error:
                # Ending the stream makes the client reconnect with its Last-Event-ID after `retry`.
                log.warning("stream_read_failed", error=f"{type(error).__name__}: {error}"[:500])
                return
            for tp, records in sorted(polled.items(), key=lambda item: item[0].partition):
                for record in records:
                    if record.offset < self.positions[tp.partition]:
                        continue  # already sent: a resumed position never repeats a record
                    self.positions[tp.partition] = record.offset + 1
                    event = self._event_for(record)
                    if event is not None:
                        self.delivered += 1
                        yield event

    async def _skip_deleted(self, error: OffsetOutOfRangeError) -> list[Gap] | None:
        """Records below a partition's earliest offset are gone (retention): go on from there and
        tell the client rather than reset silently. None when a position is not below the earliest
        offset, so there is nothing to skip to."""
        out_of_range: Mapping[TopicPartition, int] = error.args[0] if error.args else {}
        if not out_of_range:
            return None
        earliest = _by_number(await self._consumer.beginning_offsets(list(out_of_range)))
        if any(earliest[tp.partition] <= requested for tp, requested in out_of_range.items()):
            return None
        gaps = []
        for tp, requested in out_of_range.items():
            self._consumer.seek(tp, earliest[tp.partition])
            self.positions[tp.partition] = earliest[tp.partition]
            gaps.append(Gap(tp.partition, requested, earliest[tp.partition]))
        return gaps

    def _event_for(self, record: Any) -> ServerSentEvent | None:
        token = resume_token(self.positions)
        try:
            delivery = decode_record(record)
        except PoisonRecord as poison:
            if self._filter.narrows:
                return None  # it has no type or order a filter could match
            return ServerSentEvent(
                data=_json({"partition": record.partition, "offset": record.offset, "error": str(poison)}),
                event="undecodable",
                id=token,
            )
        if not self._filter.admits(delivery.envelope):
            return None
        return ServerSentEvent(
            data=encode(for_analysts(delivery.envelope)).decode(),
            event=delivery.envelope.type,
            id=token,
        )

    def _gap_event(self, gap: Gap) -> ServerSentEvent:
        log.warning("stream_gap", partition=gap.partition, requested=gap.requested, earliest=gap.earliest)
        return ServerSentEvent(
            data=_json(
                {
                    "partition": gap.partition,
                    "from_offset": gap.requested,
                    "to_offset": gap.earliest,
                    "detail": "these records were deleted by the topic's retention before this stream "
                    "read them; the stream goes on after them",
                }
            ),
            event="gap",
            id=resume_token(self.positions),
        )

    async def close(self) -> None:
        """Stop the consumer and free the stream's slot; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            # Shielded: a stream closes while its request is being cancelled (client gone, shutdown).
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope:
                await self._consumer.stop()
            if scope.cancelled_caught:
                log.warning("stream_consumer_stop_timed_out", timeout_s=CLOSE_TIMEOUT_S)
        finally:
            self._on_close()
            log.info("stream_closed", delivered=self.delivered)


def _by_number(offsets: Mapping[TopicPartition, int]) -> Positions:
    return {tp.partition: offset for tp, offset in offsets.items()}


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


class StreamResponse(EventSourceResponse):
    """An SSE response that closes its stream however it ends: the client leaving, the server
    shutting down, or an error, even one before the first event."""

    def __init__(self, stream: OrderEventStream, **options: Any) -> None:
        super().__init__(stream.events(), **options)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.close()


# --- the route ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamLimits:
    max_connections: int = 50
    ping_s: float = 15.0
    # A client that takes longer than this to accept one event is dropped (its slot freed).
    send_timeout_s: float = 30.0
    # Opening waits this long for the broker before answering 503.
    open_timeout_s: float = 10.0
    max_records: int = 500


@dataclass
class StreamSlots:
    """Counts open streams (each holds a consumer and a connection to the broker) against a limit."""

    limit: int
    open: int = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        STREAMS_OPEN.inc()
        return True

    def give_back(self) -> None:
        self.open -= 1
        STREAMS_OPEN.dec()


STREAM_EXAMPLE = (
    "id: 0:15,1:7,2:22\n"
    "event: position\n"
    'data: {"positions":{"0":15,"1":7,"2":22}}\n'
    "retry: 3000\n\n"
    "id: 0:16,1:7,2:22\n"
    "event: order.confirmed\n"
    'data: {"id":"6f1c…","type":"order.confirmed","version":1,"source":"order",'
    '"time":"2026-11-26T03:12:04Z","subject":"5f0c1f1e-…","correlation_id":"…","causation_id":"…",'
    '"data":{"order_id":"5f0c1f1e-…","order_no":"20261126-000042","total_fen":1999,"…":"…"}}\n\n'
)

Analyst = Annotated[Principal, Depends(require_role(Role.ANALYST, Role.ADMIN))]


def build_router(open_consumer: Callable[[], EventLog], limits: StreamLimits) -> APIRouter:
    """The analysts' stream; `open_consumer` makes each connection's consumer (`plain_consumers`)."""
    router = APIRouter(prefix="/v1")
    slots = StreamSlots(limits.max_connections)

    @router.get(
        "/streams/orders",
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "A `text/event-stream` of `order.events`. Each event's `event` is the "
                "event type (`order.placed`, `order.confirmed`, …), its `data` the whole envelope as "
                "JSON (the record's value, as `shared.kafka` encodes it) except personal data: the "
                "shipping address is cut to province, city and district, and a payment token is left "
                "out. Its `id` is a resume token. "
                "It opens with a `position` event (the start, as a token). A record that is not a "
                "valid event comes as `undecodable` with its partition, offset and error (not sent "
                "when a filter is given); records deleted by retention before the stream reached "
                "them come as one `gap` event per partition. A comment line is sent as a keep-alive.",
                "content": {"text/event-stream": {"schema": {"type": "string"}, "example": STREAM_EXAMPLE}},
            },
            **problem_responses(401, 403, 422, 429, 503),
        },
        tags=["streams"],
    )
    async def order_stream(
        principal: Analyst,
        last_event_id: Annotated[
            str | None,
            Header(
                max_length=MAX_TOKEN_CHARS,
                description="The id of the last event received: the stream resumes right after it, "
                "whatever `from` or `since` say.",
                examples=["0:15,1:7,2:22"],
            ),
        ] = None,
        start_from: Annotated[
            StartFrom | None,
            Query(alias="from", description="Where to start without Last-Event-ID; default `end` (live)."),
        ] = None,
        since: Annotated[
            AwareDatetime | None,
            Query(
                description="Start with the first event published at or after this time (ISO 8601 with "
                "a time zone) instead.",
                examples=["2026-11-26T03:00:00+08:00"],
            ),
        ] = None,
        types: Annotated[
            list[str] | None,
            Query(
                alias="type",
                description="Only events of these types (repeatable).",
                examples=["order.confirmed"],
            ),
        ] = None,
        order_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9_.:\-]+$",
                description="Only one order's events.",
            ),
        ] = None,
    ) -> EventSourceResponse:
        """Server-Sent Events: every event on `order.events` as it is published (analyst or admin).

        Reconnect with `Last-Event-ID` (browsers' EventSource does) to resume exactly after the
        last event received, without a gap or a duplicate."""
        start = _start(last_event_id, start_from, since)
        event_filter = _event_filter(types, order_id)
        if not slots.take():
            raise Problem(
                503,
                "Busy",
                f"all {slots.limit} event streams of this gateway are open; "
                "retry after the Retry-After seconds",
                code="busy",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        stream = OrderEventStream(
            open_consumer(), event_filter, max_records=limits.max_records, on_close=slots.give_back
        )
        try:
            async with asyncio.timeout(limits.open_timeout_s):
                await stream.open(start)
        except InvalidResumeToken as error:
            await stream.close()
            raise _invalid_token(str(error)) from None
        except (TimeoutError, KafkaError, OSError) as error:
            await stream.close()
            log.warning("stream_open_failed", error=f"{type(error).__name__}: {error}"[:500])
            raise Problem(
                503,
                "Busy",
                "the event log does not answer; retry after the Retry-After seconds",
                code="busy",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            ) from error
        except BaseException:
            await stream.close()
            raise
        log.info(
            "stream_opened",
            subject=principal.subject,
            role=principal.role.value,
            start=start.describe(),
            types=sorted(event_filter.types),
        )
        return StreamResponse(stream, ping=limits.ping_s, send_timeout=limits.send_timeout_s)

    return router


def _start(last_event_id: str | None, start_from: StartFrom | None, since: datetime | None) -> Start:
    if last_event_id is not None:
        try:
            return Start(resume=parse_resume_token(last_event_id))
        except InvalidResumeToken as error:
            raise _invalid_token(str(error)) from None
    if start_from is not None and since is not None:
        raise Problem(
            422,
            "Invalid request",
            "give `from` or `since`, not both",
            code="invalid-request",
            errors=[{"field": "since", "message": "give `from` or `since`, not both", "location": "query"}],
        )
    return Start(since=since, origin=start_from or StartFrom.END)


def _event_filter(types: Sequence[str] | None, order_id: str | None) -> EventFilter:
    wanted = frozenset(types or ())
    unknown = sorted(wanted - ORDER_EVENT_TYPES)
    if unknown:
        known = ", ".join(sorted(ORDER_EVENT_TYPES))
        message = f"{ORDER_EVENTS} carries no {', '.join(unknown)}; its types: {known}"
        raise Problem(
            422,
            "Invalid request",
            message,
            code="invalid-request",
            errors=[{"field": "type", "message": message, "location": "query"}],
        )
    return EventFilter(types=wanted, order_id=order_id)


def _invalid_token(message: str) -> Problem:
    return Problem(
        422,
        "Invalid request",
        f"Last-Event-ID: {message}",
        code="invalid-request",
        errors=[{"field": "last-event-id", "message": message, "location": "header"}],
    )

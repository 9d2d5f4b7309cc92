"""What `shopctl events` does with records, apart from the broker: times, windows, filters, the
readable form of an event, export rows, and which topics a replay may write to.

Nothing here talks to Kafka or writes files (shopctl/streams.py does), so all of it is unit-tested.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal, Protocol, Union, get_args, get_origin

import orjson

from shared.contracts import topics
from shared.contracts.base import Envelope, decode_data
from shared.contracts.privacy import for_analysts
from shared.kafka import decode, describe

DEFAULT_SANDBOX_PREFIX = "sandbox."
# Kafka's own rule for topic names.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Every topic a service consumes or owns: the contract topics and their dead-letter twins.
PLATFORM_TOPICS = frozenset(name for topic in topics.ALL for name in (topic, topics.dead_letter(topic)))
# Topics Kafka and faust keep for themselves: offsets, table changelogs, repartitioned streams and
# the partition assignor's leader election.
_INTERNAL_SUFFIXES = ("-changelog", "-repartition", "-__assignor-__leader")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# `now-1h`, as Grafana writes it; plain `-1h` too, which argparse takes only as `--from=-1h`.
_RELATIVE = re.compile(r"(?:now)?-((?:\d+[smhdw])+)", re.IGNORECASE)
_RELATIVE_PART = re.compile(r"(\d+)([smhdw])")
# How much of a record's value the readable form shows when the value is not an event.
_PREVIEW_BYTES = 200
# The analysts' view of a payload, the same as the gateway's live stream gives (services/order/
# streams.py): where an order goes is analytics, but who receives it, their phone and their street
# are not, and payment credentials never leave the payment path.


# --- times and windows ----------------------------------------------------------------------------


def parse_time(text: str, now: datetime) -> datetime:
    """An instant from ISO 8601 with a time zone, `now`, or a time ago: `now-1h`, `now-30m`, `now-1d12h`.

    A time without a zone is refused: it would silently mean the clock of whoever runs the command.
    """
    given = text.strip()
    if given.lower() == "now":
        return now.astimezone(UTC)
    relative = _RELATIVE.fullmatch(given)
    if relative is not None:
        parts = _RELATIVE_PART.findall(relative.group(1).lower())
        seconds = sum(int(amount) * _UNITS[unit] for amount, unit in parts)
        return (now - timedelta(seconds=seconds)).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(given)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give ISO 8601 with a time zone (2026-11-26T09:30:00+08:00, "
            "2026-11-26T01:30:00Z), `now`, or a time ago such as now-15m, now-2h, now-1d"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{text!r} has no time zone: add one, as in {given}Z or {given}+08:00, so that the window "
            "means the same on every machine"
        )
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end): consecutive windows never share an event."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a window's ends need a time zone")
        if self.start >= self.end:
            raise ValueError(
                f"--from ({format_time(self.start)}) must be before --to ({format_time(self.end)})"
            )

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end

    def __str__(self) -> str:
        return f"[{format_time(self.start)}, {format_time(self.end)})"


def as_utc(moment: datetime) -> datetime:
    """The instant in UTC. An envelope time without a zone (only a faulty producer writes one) is
    taken as UTC, the platform's time, rather than as the local time of whoever reads it."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """UTC to the millisecond, e.g. 2026-11-26T01:30:00.123Z."""
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- records as the tools see them ----------------------------------------------------------------


class Record(Protocol):
    """The parts of a consumed record (aiokafka's ConsumerRecord) the tools read."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


def record_time(record: Record) -> datetime | None:
    """When the record was produced (its Kafka timestamp), or None if it carries none."""
    if record.timestamp < 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


@dataclass(frozen=True)
class Seen:
    """A consumed record and the event in it, or why there is none (garbage, a dead letter's bytes)."""

    record: Record
    envelope: Envelope | None
    # Why the value is not an envelope at all.
    problem: str | None = None
    # Why a readable envelope still breaks its contract (unknown type, a newer version, bad data).
    contract_problem: str | None = None

    @property
    def moment(self) -> datetime | None:
        """The event's own time; for a record that is not an event, when it was produced."""
        return as_utc(self.envelope.time) if self.envelope is not None else record_time(self.record)

    def header(self, name: str) -> str | None:
        for key, value in self.record.headers:
            if key == name and value is not None:
                return value.decode(errors="replace")
        return None


def read(record: Record) -> Seen:
    """The record's envelope if its value is one; never raises, whatever the bytes."""
    try:
        envelope = decode(record.value)
    except ValueError as error:  # orjson's and pydantic's errors are ValueErrors
        return Seen(record, None, problem=describe(error))
    try:
        decode_data(envelope)
    except ValueError as error:
        return Seen(record, envelope, contract_problem=describe(error))
    return Seen(record, envelope)


def without_personal_data(seen: Seen) -> Seen:
    """The record as analysts get it: a shipping address cut to its region, no payment token."""
    if seen.envelope is None:
        return seen
    return replace(seen, envelope=for_analysts(seen.envelope))


@dataclass(frozen=True)
class Selection:
    """Which events `tail` shows: by type (exact or a glob such as `order.*`) and by order id."""

    types: tuple[str, ...] = ()
    order_id: str | None = None

    def admits(self, seen: Seen) -> bool:
        if seen.envelope is None:
            # Not an event, so no type to match; its key may still say which order it was about.
            if self.types:
                return False
            return self.order_id is None or seen.record.key == self.order_id.encode()
        if self.types and not any(fnmatchcase(seen.envelope.type, pattern) for pattern in self.types):
            return False
        return self.order_id is None or seen.envelope.subject == self.order_id


# --- the readable form -----------------------------------------------------------------------------


def where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def render(seen: Seen) -> str:
    """One event as a block: a headline (time, type, version, subject), its envelope, its payload."""
    record = seen.record
    lines: list[str] = []
    envelope = seen.envelope
    if envelope is None:
        produced = record_time(record)
        when = format_time(produced) if produced else "(no time)"
        lines.append(f"{when}  NOT AN EVENT  at {where(record)}")
        lines.append(f"  {seen.problem}")
        lines.append(f"  key {_preview(record.key)}")
        lines.append(f"  value {_preview(record.value)}")
    else:
        lines.append(f"{format_time(envelope.time)}  {envelope.type} v{envelope.version}  {envelope.subject}")
        lines.append(
            f"  source {envelope.source}  correlation {envelope.correlation_id}  id {envelope.id}  "
            f"cause {envelope.causation_id or '-'}  at {where(record)}"
        )
        if seen.contract_problem is not None:
            lines.append(f"  ! breaks its contract: {seen.contract_problem}")
    error = seen.header("dlq_error")
    if error is not None:
        origin = (
            f"{seen.header('dlq_source_topic')}[{seen.header('dlq_source_partition')}]"
            f"@{seen.header('dlq_source_offset')}"
        )
        lines.append(f"  ! dead letter from {origin}, refused by {seen.header('dlq_consumer')}: {error}")
    if envelope is not None:
        payload = orjson.dumps(envelope.data, option=orjson.OPT_INDENT_2).decode()
        lines.extend(f"  {line}" for line in payload.splitlines())
    return "\n".join(lines) + "\n\n"


def _preview(raw: bytes | None) -> str:
    if raw is None:
        return "(none)"
    shown = repr(raw[:_PREVIEW_BYTES])
    return f"{len(raw)} bytes: {shown}{'...' if len(raw) > _PREVIEW_BYTES else ''}"


# --- export rows -----------------------------------------------------------------------------------

ColumnKind = Literal["string", "integer", "float", "boolean", "timestamp", "json"]
_SCALARS: dict[Any, ColumnKind] = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    datetime: "timestamp",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    nullable: bool = False


def _column(name: str, annotation: Any) -> Column:
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        nullable = len(members) < len(get_args(annotation))
        annotation = members[0] if len(members) == 1 else Any
    # Anything that is not a plain value (the payload, any future nested attribute) is a JSON string,
    # so the file's schema does not depend on which event types the window happens to hold.
    return Column(name, _SCALARS.get(annotation, "json"), nullable)


def export_columns() -> list[Column]:
    """One column per envelope attribute, read off the model so a new attribute is exported too,
    then where the record was: topic, partition, offset."""
    return [
        *(_column(name, info.annotation) for name, info in Envelope.model_fields.items()),
        Column("topic", "string"),
        Column("partition", "integer"),
        Column("offset", "integer"),
    ]


def _exported(seen: Seen) -> Envelope:
    if seen.envelope is None:
        raise ValueError(f"{where(seen.record)} is not an event")
    return seen.envelope.model_copy(update={"time": as_utc(seen.envelope.time)})


def export_row(seen: Seen, columns: Sequence[Column]) -> dict[str, Any]:
    """A Parquet row: plain values as they are (times in UTC), nested ones as JSON text."""
    values: dict[str, Any] = {
        **dict(_exported(seen)),
        "topic": seen.record.topic,
        "partition": seen.record.partition,
        "offset": seen.record.offset,
    }
    row: dict[str, Any] = {}
    for column in columns:
        value = values.get(column.name)
        if value is None:
            row[column.name] = None
        elif column.kind == "json":
            row[column.name] = orjson.dumps(value).decode()
        elif column.kind == "timestamp":
            row[column.name] = as_utc(value)
        else:
            row[column.name] = value
    return row


def jsonl_line(seen: Seen) -> bytes:
    """A JSON Lines row: the same fields as the Parquet columns, with the payload as an object."""
    document = {
        **_exported(seen).model_dump(mode="json"),
        "topic": seen.record.topic,
        "partition": seen.record.partition,
        "offset": seen.record.offset,
    }
    return orjson.dumps(document) + b"\n"


# --- where a replay may write ----------------------------------------------------------------------


def check_sandbox_prefix(prefix: str) -> None:
    """Raise ValueError unless `prefix` is a usable sandbox prefix: one that no platform topic has."""
    if not prefix or TOPIC_NAME.fullmatch(prefix) is None:
        raise ValueError(f"the sandbox prefix {prefix!r} must be 1 or more of letters, digits and . _ -")
    covered = sorted(topic for topic in PLATFORM_TOPICS if topic.startswith(prefix))
    if covered:
        raise ValueError(
            f"the sandbox prefix {prefix!r} would cover platform topics ({', '.join(covered)}); "
            f"use one of its own, such as {DEFAULT_SANDBOX_PREFIX!r}"
        )


def is_internal(topic: str) -> bool:
    """Kafka's own topics (`__consumer_offsets`) and the ones faust keeps for its tables and streams."""
    return topic.startswith("__") or topic.endswith(_INTERNAL_SUFFIXES)


def replay_refusal(target: str, *, source: str, sandbox_prefix: str) -> str | None:
    """Why `replay` must not write into `target`, or None if it may.

    Only sandbox topics are allowed: a topic a service consumes would make the services act on old
    events again (stock reserved twice, customers told twice), and one it owns would mix copies
    into the record of what happened.
    """
    if TOPIC_NAME.fullmatch(target) is None or target in {".", ".."}:
        return f"{target!r} is not a topic name: use 1 to 249 letters, digits and . _ -"
    if target in PLATFORM_TOPICS:
        return f"{target} is a platform topic that the services consume or own"
    if is_internal(target):
        return f"{target} is an internal topic of Kafka or of a faust service"
    if target == source:
        return f"{target} is the topic being replayed"
    if not target.startswith(sandbox_prefix) or target == sandbox_prefix:
        return (
            f"{target} is not a sandbox topic: replay writes only into topics named "
            f"{sandbox_prefix}<something>, e.g. {sandbox_prefix}my-job"
        )
    return None

"""The broker and file side of `shopctl events`: tail, replay and export.

Every read uses a plain consumer with manually assigned partitions and no consumer group, so the
tools never join, rebalance or commit offsets for the services' groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import SharedSettings
from shopctl.events import (
    DEFAULT_SANDBOX_PREFIX,
    Column,
    Seen,
    Selection,
    Window,
    export_columns,
    export_row,
    is_internal,
    jsonl_line,
    read,
    render,
    where,
    without_personal_data,
)

CLIENT_ID = "shopctl-events"
POLL_MS = 200
# A producer's clock may run behind the clock that stamped the event: start reading this much before
# the window so such a record is still found (the envelope time decides whether it is in).
CLOCK_SKEW_MS = 5 * 60 * 1000
# A window read that gets no record for this long, though the partition has more, gives up.
STALL_S = 30.0
ROW_GROUP_ROWS = 10_000
# How long a topic replay created may take to appear with its partitions.
NEW_TOPIC_WAIT_S = 15.0
Format = Literal["parquet", "jsonl"]


class EventToolSettings(BaseSettings):
    """What the event tools take from the environment: the broker, read as the services read it, and
    the sandbox prefix. None of the services' secrets, which an analyst does not have."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    kafka_bootstrap_servers: str = SharedSettings.model_fields["kafka_bootstrap_servers"].default
    events_sandbox_prefix: str = DEFAULT_SANDBOX_PREFIX


class ToolError(Exception):
    """A failure the command reports in one line and exits 1 for (a missing topic, a stalled read)."""


@contextlib.asynccontextmanager
async def _consumer(bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        client_id=CLIENT_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=15_000,
    )
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # topics() asks for every topic's metadata, which never creates one (asking for a named topic may:
    # brokers that auto-create topics make it on the spot).
    known: set[str] = await consumer.topics()
    ids = consumer.partitions_for_topic(topic) if topic in known else None
    if not ids:
        listed = ", ".join(sorted(name for name in known if not is_internal(name))) or "none"
        raise ToolError(f"there is no topic {topic!r} on the broker (its topics: {listed})")
    return [TopicPartition(topic, partition) for partition in sorted(ids)]


# --- tail ------------------------------------------------------------------------------------------


async def tail(
    bootstrap: str,
    topic: str,
    selection: Selection,
    *,
    emit: Callable[[str], None],
    from_beginning: bool = False,
    max_events: int | None = None,
    idle_exit_s: float | None = None,
    personal_data: bool = False,
) -> int:
    """Show `topic`'s events as they arrive until `max_events` were shown or the topic has been quiet
    for `idle_exit_s` (forever if neither); the number shown. Personal data is cut unless asked for."""
    shown = 0
    loop = asyncio.get_running_loop()
    began_ms = time.time() * 1000
    # Some brokers answer "latest" with the start of a partition's last batch (the embedded one
    # does), so seeking to the end can leave the rest of that batch to read. A record below the first
    # high-water mark a fetch reported, produced before the tail began, was there already.
    first_highwater: dict[TopicPartition, int] = {}
    async with _consumer(bootstrap) as consumer:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        last_record_at = loop.time()
        while max_events is None or shown < max_events:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    first_highwater.setdefault(tp, highwater)
            # Partitions interleave by time, as they were produced; merge keeps each one's own order
            # even where a producer's clock stepped back.
            records = list(heapq.merge(*batches.values(), key=lambda record: record.timestamp))
            if records:
                last_record_at = loop.time()
            elif idle_exit_s is not None and loop.time() - last_record_at >= idle_exit_s:
                break
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                if (
                    not from_beginning
                    and record.offset < first_highwater.get(tp, 0)
                    and record.timestamp < began_ms
                ):
                    continue
                seen = read(record)
                if not selection.admits(seen):
                    continue
                emit(render(seen if personal_data else without_personal_data(seen)))
                shown += 1
                if max_events is not None and shown >= max_events:
                    break
    return shown


# --- reading a time window -------------------------------------------------------------------------


async def _start_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], window: Window
) -> dict[TopicPartition, int]:
    """Where each partition's records of the window may begin: found by record timestamp (minus the
    clock skew allowance), or the partition's beginning if the broker cannot look offsets up by time."""
    beginnings: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    from_ms = max(0, int(window.start.timestamp() * 1000) - CLOCK_SKEW_MS)
    try:
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, from_ms))
    except KafkaError:
        return beginnings
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    # No record at or after that time: nothing of the window is there yet.
    return {
        tp: ends[tp] if found.get(tp) is None else max(beginnings[tp], found[tp].offset) for tp in partitions
    }


async def window_records(
    consumer: AIOKafkaConsumer, topics: Sequence[str], window: Window
) -> AsyncIterator[Seen]:
    """Every record of `topics` in the window, read until each partition is caught up. A record is
    in the window by its envelope time, or, if it is not an event, by its Kafka timestamp."""
    partitions = [tp for topic in topics for tp in await _partitions(consumer, topic)]
    consumer.assign(partitions)
    # Some brokers answer "latest" with the start of a partition's last batch (the embedded one
    # does), so a partition is done only once a fetch has shown its position at the high-water mark.
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    starts = await _start_offsets(consumer, partitions, window)
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    pending = set(partitions)
    loop = asyncio.get_running_loop()
    progressed_at = loop.time()
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
        for batch in batches.values():
            progressed_at = loop.time()
            for record in batch:
                seen = read(record)
                if seen.moment in window:
                    yield seen
        for tp in list(pending):
            highwater: int | None = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= max(highwater, ends[tp]):
                pending.discard(tp)
                consumer.pause(tp)
        if pending and loop.time() - progressed_at > STALL_S:
            behind = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            raise ToolError(f"no records came from {behind} for {STALL_S:g} s although it has more")


# --- replay ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayReport:
    copied: int
    created: bool
    partitions: int


async def _ensure_topic(bootstrap: str, topic: str, partitions: int) -> tuple[bool, int]:
    """Create `topic` unless it exists; whether this call created it, and its partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    await admin.start()
    try:
        created = False
        if topic not in set(await admin.list_topics()):
            brokers = (await admin.describe_cluster())["brokers"]
            try:
                await admin.create_topics([NewTopic(topic, partitions, min(3, max(1, len(brokers))))])
                created = True
            except TopicAlreadyExistsError:
                pass  # someone else made it between our look and our create
        return created, await _partition_count(admin, topic)
    finally:
        await admin.close()


async def _partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    """The partitions of an existing topic, once they all have leaders (a new one takes a moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NEW_TOPIC_WAIT_S
    while True:
        [description] = await admin.describe_topics([topic])
        listed = description["partitions"]
        if description["error_code"] == 0 and listed and all(p["error_code"] == 0 for p in listed):
            return len(listed)
        if loop.time() >= deadline:
            raise ToolError(f"topic {topic!r} did not get its partitions within {NEW_TOPIC_WAIT_S:g} s")
        await asyncio.sleep(0.2)


async def replay(bootstrap: str, source: str, window: Window, target: str) -> ReplayReport:
    """Copy the window's records of `source` into `target` (created with as many partitions if it
    does not exist), each with its key, value, headers, timestamp and, when the partition counts
    match, its partition, so a job reading the copy sees what the services saw, in the same order."""
    copied = 0
    async with _consumer(bootstrap) as consumer:
        source_partitions = await _partitions(consumer, source)
        created, target_partitions = await _ensure_topic(bootstrap, target, len(source_partitions))
        same_partitions = target_partitions == len(source_partitions)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=CLIENT_ID, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent: list[asyncio.Future[Any]] = []
            async for seen in window_records(consumer, [source], window):
                record = seen.record
                sent.append(
                    await producer.send(
                        target,
                        record.value,
                        key=record.key,
                        headers=list(record.headers),
                        partition=record.partition if same_partitions else None,
                        timestamp_ms=record.timestamp if record.timestamp >= 0 else None,
                    )
                )
                if len(sent) >= 1000:
                    copied += len(await asyncio.gather(*sent))
                    sent = []
            copied += len(await asyncio.gather(*sent))
        finally:
            await producer.stop()
    return ReplayReport(copied=copied, created=created, partitions=target_partitions)


# --- export ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    rows: int
    # Where the window held records that are not events: they are left out of the file.
    skipped: tuple[str, ...]


class _Sink(Protocol):
    def add(self, seen: Seen) -> None: ...
    def close(self) -> None: ...


class _JsonlSink:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def add(self, seen: Seen) -> None:
        self._stream.write(jsonl_line(seen))

    def close(self) -> None:
        self._stream.flush()


def arrow_schema(columns: Sequence[Column]) -> Any:
    import pyarrow as pa  # imported here: it takes a while, and only export needs it

    types = {
        "string": pa.string(),
        "json": pa.string(),
        "integer": pa.int64(),
        "float": pa.float64(),
        "boolean": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema(
        [
            pa.field(
                column.name,
                types[column.kind],
                nullable=column.nullable,
                metadata={"content": "json"} if column.kind == "json" else None,
            )
            for column in columns
        ]
    )


class _ParquetSink:
    """Rows in row groups of ROW_GROUP_ROWS, so an export of days of events needs no more memory."""

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._columns = columns
        self._schema = arrow_schema(columns)
        self._writer = pq.ParquetWriter(str(path), self._schema)
        self._rows: list[dict[str, Any]] = []

    def add(self, seen: Seen) -> None:
        self._rows.append(export_row(seen, self._columns))
        if len(self._rows) >= ROW_GROUP_ROWS:
            self._flush()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(self._pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []


@contextlib.contextmanager
def open_sink(fmt: Format, out: str) -> Iterator[_Sink]:
    """Where the rows go. A file appears whole or not at all: rows are written to a hidden file beside
    it that replaces it only once the export has finished, so a failed export leaves no half file."""
    if out == "-":
        if fmt != "jsonl":
            raise ToolError("only jsonl can go to stdout (-); give a file name for parquet")
        sink = _JsonlSink(sys.stdout.buffer)
        yield sink
        sink.close()
        return
    target = Path(out)
    if not target.parent.is_dir():
        raise ToolError(f"cannot write {out}: there is no directory {target.parent}")
    if target.is_dir():
        raise ToolError(f"cannot write {out}: it is a directory")
    # mkstemp makes the file readable by its owner only, as an export holding personal data should be.
    descriptor, partial_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    os.close(descriptor)
    partial = Path(partial_name)
    try:
        if fmt == "parquet":
            parquet = _ParquetSink(partial, export_columns())
            yield parquet
            parquet.close()
        else:
            with partial.open("wb") as stream:
                jsonl = _JsonlSink(stream)
                yield jsonl
                jsonl.close()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


async def export(
    bootstrap: str,
    topics: Sequence[str],
    window: Window,
    fmt: Format,
    out: str,
    *,
    personal_data: bool = False,
) -> ExportReport:
    """Write the window's events of `topics` to `out`, personal data cut unless asked for; records
    that are not events are left out and named in the report."""
    rows = 0
    skipped: list[str] = []
    with open_sink(fmt, out) as sink:
        async with _consumer(bootstrap) as consumer:
            async for seen in window_records(consumer, topics, window):
                if seen.envelope is None:
                    skipped.append(where(seen.record))
                    continue
                sink.add(seen if personal_data else without_personal_data(seen))
                rows += 1
    return ExportReport(rows=rows, skipped=tuple(skipped))

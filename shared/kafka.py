"""The one place that builds and parses the envelope, plus the aiokafka producer/consumer plumbing.

Records are CloudEvents in structured mode: the value is the whole JSON envelope (so a plain
consumer sees everything), and the `ce_*` headers repeat the attributes for routing without parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from pydantic import ValidationError

from shared import metrics
from shared.contracts.base import Envelope, Event, decode_data
from shared.contracts.topics import dead_letter
from shared.errors import Outage
from shared.logging import correlation, get_logger
from shared.settings import SharedSettings

log = get_logger(__name__)

Headers = list[tuple[str, bytes | None]]
CONTENT_TYPE = b"application/cloudevents+json"
# The metrics label of records whose type cannot be read: label values never come from the wire.
UNKNOWN_TYPE = "unknown"


def new_envelope(
    event: Event,
    *,
    source: str,
    correlation_id: str,
    causation_id: str | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Wrap a typed event; pass `event_id` to make a re-emitted event recognisably the same one."""
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        type=event.TYPE,
        version=event.VERSION,
        source=source,
        time=datetime.now(UTC),
        subject=event.subject(),
        correlation_id=correlation_id,
        causation_id=causation_id,
        data=event.model_dump(mode="json"),
    )


def reply_to(cause: Envelope, event: Event, *, source: str) -> Envelope:
    """An event caused by `cause`: same correlation id, causation = the cause's id.

    The id is derived from the cause so that handling the same cause twice emits the same event,
    which every consumer then applies once.
    """
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{cause.id}/{event.TYPE}/{event.subject()}"))
    return new_envelope(
        event,
        source=source,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        event_id=event_id,
    )


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def decode(value: bytes | None) -> Envelope:
    if value is None:
        raise ValueError("record has no value")
    return Envelope.model_validate(orjson.loads(value))


def headers_for(envelope: Envelope) -> Headers:
    return [
        ("content-type", CONTENT_TYPE),
        ("ce_specversion", b"1.0"),
        ("ce_id", envelope.id.encode()),
        ("ce_type", envelope.type.encode()),
        ("ce_source", envelope.source.encode()),
        ("ce_subject", envelope.subject.encode()),
        ("ce_time", envelope.time.isoformat().encode()),
        ("ce_dataschemaversion", str(envelope.version).encode()),
        ("correlation_id", envelope.correlation_id.encode()),
    ]


def topic_for(envelope: Envelope) -> str:
    from shared.contracts.base import REGISTRY

    return REGISTRY[envelope.type].TOPIC


@dataclass(frozen=True)
class Delivery:
    """One consumed record: its envelope, the typed event inside, and where it came from."""

    envelope: Envelope
    event: Event
    topic: str
    partition: int
    offset: int
    # The record as consumed, so a dead letter carries the original bytes and headers.
    raw_key: bytes | None = None
    raw_value: bytes | None = None
    raw_headers: tuple[tuple[str, bytes | None], ...] = ()


class PoisonRecord(ValueError):
    """A consumed record that is not a valid event of a known type and version."""


def record_headers(record: Any) -> tuple[tuple[str, bytes | None], ...]:
    """A record's headers as (name, value) pairs, whether the client gave a list or a mapping."""
    headers = record.headers or ()
    if isinstance(headers, Mapping):
        return tuple(headers.items())
    return tuple(headers)


def decode_record(record: Any) -> Delivery:
    """The typed event in a consumed record (aiokafka's or faust's), or PoisonRecord saying why not.

    Whatever its bytes, this raises nothing else: a record must never be able to stop a consumer.
    """
    try:
        envelope = decode(record.value)
        event = decode_data(envelope)
        return Delivery(
            envelope,
            event,
            record.topic,
            record.partition,
            record.offset,
            raw_key=record.key,
            raw_value=record.value,
            raw_headers=record_headers(record),
        )
    except Exception as error:  # noqa: BLE001 - any failure to read a record makes it poison
        raise PoisonRecord(describe(error)) from error


def describe(error: BaseException) -> str:
    """A short account of an error, without the input values pydantic would quote (personal data)."""
    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        ]
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        return f"invalid {error.title}: {'; '.join(problems[:5])}{more}"
    return f"{type(error).__name__}: {error}"[:1000]


def first_unseen(
    consumer: str, deliveries: Sequence[Delivery], applied: set[str] | frozenset[str]
) -> tuple[list[Delivery], list[Delivery]]:
    """Split deliveries into those `consumer` has not applied (first copy wins) and duplicates.

    `applied` holds "consumer:event id" keys, as the processed-events record stores them."""
    seen = set(applied)
    fresh: list[Delivery] = []
    duplicates: list[Delivery] = []
    for delivery in deliveries:
        key = f"{consumer}:{delivery.envelope.id}"
        (duplicates if key in seen else fresh).append(delivery)
        seen.add(key)
    return fresh, duplicates


def make_producer(settings: SharedSettings, client_id: str) -> AIOKafkaProducer:
    # No enable_idempotence: the embedded broker refuses InitProducerId, and consumers dedupe
    # by event id anyway, which also covers the outbox relay's republish after a crash.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=15000,
    )


def make_consumer(settings: SharedSettings, group_id: str, topics: Sequence[str]) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_interval_ms=300_000,
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.kafka_heartbeat_interval_s * 1000),
        # A join waits this long for the other members; a dead one is dropped after its session.
        rebalance_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
    )


def make_plain_consumer(
    settings: SharedSettings,
    client_id: str,
    *,
    auto_offset_reset: str,
    fetch_max_wait_ms: int | None = None,
) -> AIOKafkaConsumer:
    """A consumer outside any group: its reader assigns partitions by hand and commits nothing."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms
        if fetch_max_wait_ms is None
        else fetch_max_wait_ms,
    )


async def ensure_topics(settings: SharedSettings, topics: Sequence[str]) -> None:
    """Create missing topics and their dead-letter twins (on real clusters they are declared)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {name for topic in topics for name in (topic, dead_letter(topic))}
        missing = sorted(wanted - existing)
        if missing:
            try:
                await admin.create_topics([NewTopic(name, settings.topic_partitions, 1) for name in missing])
            except TopicAlreadyExistsError:
                pass  # another service created it between our list and create
    finally:
        await admin.close()


async def wait_for_broker(settings: SharedSettings) -> None:
    """Block until the broker answers metadata requests, so services may start before it; give up
    (DependencyLost) after `dependency_outage_limit_s`."""
    outage = Outage(
        f"the Kafka broker at {settings.kafka_bootstrap_servers}", settings.dependency_outage_limit_s
    )
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as error:
            outage.failed(error)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
MAX_TRANSIENT_BACKOFF_S = 5.0


class _Stopped(Exception):
    """Shutdown came while a batch was waiting out a transient failure; it is left uncommitted."""


class BatchConsumer:
    """getmany → decode → handle the batch (one store write) → commit; bad records to the DLQ.

    A record that is not a valid event is dead-lettered at once. A batch that fails is retried with
    backoff; if it still fails, its events are handled one by one so that a single poison event is
    dead-lettered without holding back the good ones. A transient failure (a lost write race, the
    database briefly away) is not the event's fault: it is retried, never dead-lettered, until it
    has lasted `dependency_outage_limit_s`; then the process gives up (DependencyLost) so that its
    supervisor restarts it, and the uncommitted batch is redelivered.
    """

    def __init__(
        self,
        *,
        service: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        handle: BatchHandler,
        settings: SharedSettings,
        is_transient: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self._service = service
        self._is_transient = is_transient
        self._stop = asyncio.Event()
        self._consumer = consumer
        self._producer = producer
        self._handle = handle
        self._max_records = settings.consumer_max_records
        self._poll_timeout_ms = settings.consumer_poll_timeout_ms
        self._max_attempts = settings.handler_max_attempts
        self._store_outage = Outage("the handler's datastore", settings.dependency_outage_limit_s)
        self._broker_outage = Outage("the Kafka broker", settings.dependency_outage_limit_s)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await self._consumer.start()
        try:
            while not stop.is_set():
                polled = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                records = [record for batch in polled.values() for record in batch]
                if not records:
                    continue
                try:
                    await self._process(records)
                except _Stopped:
                    break  # uncommitted: the next owner of these partitions redelivers the batch
                await self._commit()
        finally:
            # Leaving the group promptly lets a replica take over our partitions at once.
            await self._consumer.stop()

    async def _commit(self) -> None:
        while True:
            try:
                await self._consumer.commit()
                self._broker_outage.recovered()
                return
            except CommitFailedError as error:
                # A rebalance took the partitions away; the new owner redelivers and dedupes by id.
                log.warning("commit_failed", error=str(error))
                return
            except KafkaError as error:
                self._broker_outage.failed(error)
                log.warning("commit_retry", error=describe(error))
                await self._pause(1.0, error)

    async def _process(self, records: Sequence[Any]) -> None:
        deliveries: list[Delivery] = []
        for record in records:
            try:
                delivery = decode_record(record)
            except PoisonRecord as poison:
                metrics.EVENTS_CONSUMED.labels(self._service, record.topic, UNKNOWN_TYPE).inc()
                await self.dead_letter(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=record_headers(record),
                    error=f"undecodable record: {poison}",
                )
                continue
            metrics.EVENTS_CONSUMED.labels(self._service, record.topic, delivery.envelope.type).inc()
            deliveries.append(delivery)
        if not deliveries:
            return
        started = time.perf_counter()
        if await self._attempt(deliveries) is not None:
            for delivery in deliveries:
                error = await self._attempt([delivery])
                if error is None:
                    continue
                with correlation(delivery.envelope.correlation_id):
                    await self.dead_letter(
                        topic=delivery.topic,
                        partition=delivery.partition,
                        offset=delivery.offset,
                        key=delivery.raw_key,
                        value=delivery.raw_value,
                        headers=delivery.raw_headers,
                        error=error,
                    )
        metrics.BATCH_SECONDS.labels(self._service).observe(time.perf_counter() - started)

    async def _attempt(self, deliveries: Sequence[Delivery]) -> str | None:
        """Handle the deliveries; None once they are applied, else the last error after every retry."""
        attempt = 0
        transient_backoff = 0.05
        while True:
            try:
                await self._handle(deliveries)
                self._store_outage.recovered()
                return None
            except Exception as error:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                error_text = describe(error)
                metrics.HANDLER_RETRIES.labels(self._service).inc()
                transient = self._is_transient(error)
                if not transient:
                    attempt += 1
                first = deliveries[0].envelope
                with correlation(first.correlation_id):
                    log.warning(
                        "handler_failed",
                        attempt=attempt,
                        transient=transient,
                        batch=len(deliveries),
                        event_type=first.type,
                        error=error_text[:500],
                        exc_info=attempt == self._max_attempts,
                    )
                if transient:
                    self._store_outage.failed(error)
                    await self._pause(transient_backoff, error)
                    transient_backoff = min(transient_backoff * 2, MAX_TRANSIENT_BACKOFF_S)
                    continue
                if attempt >= self._max_attempts:
                    return error_text
                await asyncio.sleep(0.05 * 2**attempt)

    async def _pause(self, seconds: float, error: BaseException) -> None:
        """Wait before a retry; a stop request ends the wait and leaves the batch uncommitted."""
        if self._stop.is_set():
            raise _Stopped from error
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        if self._stop.is_set():
            raise _Stopped from error

    async def dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        error: str,
    ) -> None:
        """Send a record to `<topic>.dlq`; the batch waits until the broker has it."""
        dlq = dead_letter(topic)
        dlq_headers = dead_letter_headers(
            headers, error=error, consumer=self._service, topic=topic, partition=partition, offset=offset
        )
        while True:
            try:
                await self._producer.send_and_wait(dlq, value or b"", key=key, headers=dlq_headers)
                self._broker_outage.recovered()
                break
            except KafkaError as send_error:
                self._broker_outage.failed(send_error)
                log.warning("dead_letter_retry", topic=dlq, error=describe(send_error))
                await self._pause(1.0, send_error)
        metrics.EVENTS_DEAD_LETTERED.labels(self._service, dlq).inc()
        log.error("dead_lettered", topic=dlq, source_offset=offset, error=error[:500])


def dead_letter_headers(
    original: Sequence[tuple[str, bytes | None]],
    *,
    error: str,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
) -> Headers:
    """The original headers plus why and where a record failed, so it can be inspected and replayed."""
    return [
        *original,
        ("dlq_error", error.encode()[:4000]),
        ("dlq_consumer", consumer.encode()),
        ("dlq_source_topic", topic.encode()),
        ("dlq_source_partition", str(partition).encode()),
        ("dlq_source_offset", str(offset).encode()),
    ]

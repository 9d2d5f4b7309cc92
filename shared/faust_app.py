"""The faust plumbing of the stream-processing services: the app, its worker, its outputs, its readiness.

- `App`: faust's app whose consumer waits KAFKA_FETCH_MAX_WAIT_MS for a fetch, as every other
  service's consumer does. faust fixes 1500 ms; a broker whose long poll is not woken by new
  records (the embedded one, see INFRA.md) answers an idle partition's fetch only when that wait is
  over, so each agent hop could add up to 1.5 s.
- `run_faust_service`: waits for the broker, creates the shared topics, then runs the shared FastAPI
  app (shared.runtime.serve, uvicorn on the service's port) beside the faust app, with faust's
  documented `faust_app_running` (`faust_worker`), and stops both on SIGTERM so that the consumer
  commits and leaves its group.
- `OutboundRecord`, `Send`, `Outputs`, `topic_sender`: where an agent's records go, each send
  returning once the broker has the record, so that faust never commits a consumed offset ahead of
  its outcome.
- `Route`, `rekeying_app`, `rekey`: the app of a service that keeps state per customer or per
  merchant, with its first agent: the records of a source topic, re-keyed onto the service's internal
  topic so that one key's state lives in one partition (one worker).
- `apply_record`: one consumed record through the service's handlers, or why it could not be.
- `dead_letter`: a consumed record to a dead-letter topic, with why and where it failed.
- `readiness`: ready once the app holds partitions of its stateful topic and the broker answers.

Agents read records with shared.kafka.decode_record (raw key and value serializers), never a second
`faust.Record` copy of the contracts. They never yield: faust answers whatever a yielding agent yields
to the topic named in a record's `Faust-Ag-ReplyTo` header, which would let the wire pick our outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any, TypeVar

import faust
from fastapi import APIRouter, FastAPI
from faust.contrib.asgi import faust_app_running
from faust.transport.drivers import aiokafka as driver
from faust.types import AgentT, StreamT, TopicT

from shared import metrics
from shared.auth import TokenVerifier
from shared.contracts import Event, topics
from shared.handlers import Handlers
from shared.http import ReadinessCheck, create_app
from shared.kafka import (
    UNKNOWN_TYPE,
    Delivery,
    Headers,
    PoisonRecord,
    dead_letter_headers,
    decode_record,
    describe,
    ensure_topics,
    record_headers,
    wait_for_broker,
)
from shared.logging import configure_logging, get_logger
from shared.runtime import Worker, serve
from shared.settings import SharedSettings

log = get_logger(__name__)

B = TypeVar("B")

# Record keys and values stay bytes: agents decode them with shared.kafka like every consumer.
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


class App(faust.App):
    """A faust App whose consumer waits at most `fetch_max_wait_ms` for a fetch to fill."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.consumer.app
        if isinstance(app, App):
            # Read by AIOKafkaConsumer.start() when it builds its fetcher, which it has not yet.
            consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


def new_app(service: str, settings: SharedSettings, *, data_dir: str) -> App:
    """The service's faust app with the platform's settings: in-memory tables (their changelogs in
    Kafka), faust's own web server off, acks from every replica, short group timeouts."""
    return App(
        service,
        broker=broker_urls(settings),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        store="memory://",
        datadir=data_dir,
        topic_partitions=settings.topic_partitions,
        # HTTP is the shared FastAPI app; faust's aiohttp server would also expose every table at /table.
        web_enabled=False,
        producer_acks=-1,
        # The group coordinator holds a join for up to these; faust's 60 s defaults make every start slow.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
    )


def broker_urls(settings: SharedSettings) -> list[str]:
    return [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap_servers.split(",") if host.strip()]


def faust_worker(app: faust.App) -> Worker:
    """Runs the faust app until stop, then stops it: the consumer commits and leaves its group.

    A crashed faust app ends the worker with its error, which takes the process down (serve)."""

    async def consume(stop: asyncio.Event) -> None:
        async with faust_app_running(app):
            stopping = asyncio.ensure_future(stop.wait())
            ended = asyncio.ensure_future(app.wait_until_stopped())
            try:
                await asyncio.wait({stopping, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                ended.cancel()
        if app.crash_reason is not None:
            raise RuntimeError(f"the faust app crashed: {app.crash_reason!r}") from app.crash_reason

    consume.__qualname__ = "faust_worker"
    return consume


def holds_partitions_of(app: faust.App, topic: str) -> bool:
    """The app runs, is not rebalancing, has its tables recovered and holds partitions of `topic`."""
    if not app.started or app.should_stop:
        return False
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its ABC
    if app.rebalancing or not recovery.completed.is_set():
        return False
    return any(tp.topic == topic for tp in app.consumer.assignment())


def readiness(app: faust.App, settings: SharedSettings, *, holding: str) -> dict[str, ReadinessCheck]:
    """Ready: the app runs, holds partitions of the topic `holding` with its tables recovered, and the
    broker answers."""

    async def consumer_assigned() -> bool:
        return holds_partitions_of(app, holding)

    async def kafka() -> bool:
        return await broker_reachable(settings.kafka_bootstrap_servers)

    return {"consumer": consumer_assigned, "kafka": kafka}


def http_app(
    service: str,
    settings: SharedSettings,
    *,
    readiness: dict[str, ReadinessCheck],
    routers: Sequence[APIRouter],
    description: str,
) -> FastAPI:
    """The shared FastAPI app (health, readiness, metrics, problem+json, auth) with the service's routes."""
    app = create_app(
        service,
        readiness=readiness,
        token_verifier=TokenVerifier(settings),
        max_body_bytes=settings.http_max_body_bytes,
        description=description,
    )
    for router in routers:
        app.include_router(router)
    return app


@dataclass(frozen=True)
class FaustWiring:
    """What a stream-processing service runs: its faust app, its HTTP app and any other workers."""

    app: faust.App
    http: FastAPI
    workers: Sequence[Worker] = ()


async def run_faust_service(
    *, service: str, settings: SharedSettings, port: int, wire: Callable[[], FaustWiring]
) -> None:
    """Wait for the broker, create the shared topics faust does not own (dev/test brokers), then serve
    the HTTP app on `port` with the faust app and the other workers beside it until SIGTERM."""
    configure_logging(service, settings.log_level)
    await wait_for_broker(settings)
    await ensure_topics(settings, topics.ALL)
    # Wired on the running loop, which faust_app_running binds the app to.
    wiring = wire()
    await serve(
        service=service,
        app=wiring.http,
        host=settings.http_host,
        port=port,
        workers=[faust_worker(wiring.app), *wiring.workers],
    )


def bind(agent: Callable[..., Awaitable[None]], **dependencies: Any) -> Callable[..., Awaitable[None]]:
    """`agent` with its dependencies given, still named and documented as itself in faust's logs."""
    return update_wrapper(partial(agent, **dependencies), agent)


@dataclass(frozen=True)
class OutboundRecord:
    key: bytes | None
    value: bytes
    headers: Headers


Send = Callable[[OutboundRecord], Awaitable[None]]


@dataclass(frozen=True)
class Outputs:
    """Where a re-keying service's agents' records go. Each send returns once the record is safely
    stored, so that faust never commits a consumed offset ahead of what was made of it."""

    forward: Send  # a consumed record, re-keyed, to the service's internal topic
    publish: Send  # what the service made of it, to the topic it publishes
    dead_letter: Send  # a record the service cannot use, to the dead-letter topic


def topic_sender(topic: TopicT) -> Send:
    """A Send that writes to `topic` and returns once the broker has acknowledged the record."""

    async def send(record: OutboundRecord) -> None:
        # faust types header values as bytes; Kafka allows null ones, and aiokafka sends them as such.
        headers: Any = record.headers
        await (await topic.send(key=record.key, value=record.value, headers=headers))

    return send


@dataclass(frozen=True)
class Route:
    """The first agent of a service that keeps state per customer or per merchant: each record of
    `source`, forwarded to the internal topic `rekeyed` once per key `keys_of` gives for its event,
    so that one key's state lives in one partition (one worker). What it cannot read goes to
    `source`'s dead-letter topic."""

    source: str
    rekeyed: str
    keys_of: Callable[[Event], Iterable[str]]

    @property
    def dead_letter_topic(self) -> str:
        return topics.dead_letter(self.source)


@dataclass(frozen=True)
class Rekeying:
    """A service's faust app with its route agent, and the topic and outputs of its stateful agent."""

    app: App
    route: AgentT[bytes]
    rekeyed: TopicT
    outputs: Outputs

    def agent(self, name: str, agent: Callable[..., Awaitable[None]], **dependencies: Any) -> AgentT[bytes]:
        """`agent` reading the re-keyed topic, given `dependencies` and the outputs."""
        return self.app.agent(self.rekeyed, name=name)(bind(agent, outputs=self.outputs, **dependencies))


def rekeying_app(
    service: str,
    settings: SharedSettings,
    route: Route,
    *,
    data_dir: str,
    publish: str,
    outputs: Outputs | None = None,
) -> Rekeying:
    """The service's app with its `route` agent; `outputs` defaults to sending to the topics: the
    re-keyed one, `publish`, and the dead-letter one."""
    app = new_app(service, settings, data_dir=data_dir)
    rekeyed = app.topic(route.rekeyed, internal=True, partitions=settings.topic_partitions, **RAW)
    if outputs is None:
        outputs = Outputs(
            forward=topic_sender(rekeyed),
            publish=topic_sender(app.topic(publish, **RAW)),
            dead_letter=topic_sender(app.topic(route.dead_letter_topic, **RAW)),
        )
    forward = bind(
        rekey,
        outputs=outputs,
        service=service,
        dead_letter_topic=route.dead_letter_topic,
        keys_of=route.keys_of,
    )
    route_agent = app.agent(app.topic(route.source, **RAW), name="route")(forward)
    return Rekeying(app=app, route=route_agent, rekeyed=rekeyed, outputs=outputs)


async def rekey(
    stream: StreamT[bytes],
    outputs: Outputs,
    *,
    service: str,
    dead_letter_topic: str,
    keys_of: Callable[[Event], Iterable[str]],
) -> None:
    """Forward each record of `stream` once per key `keys_of` gives for its event (none: passed over),
    unchanged but for its key; one that cannot be read goes to `dead_letter_topic`."""
    async for event in stream.events():
        message = event.message
        try:
            delivery = decode_record(message)
        except PoisonRecord as poison:
            metrics.EVENTS_CONSUMED.labels(service, message.topic, UNKNOWN_TYPE).inc()
            await dead_letter(
                outputs.dead_letter,
                message,
                service=service,
                dead_letter_topic=dead_letter_topic,
                error=f"undecodable record: {poison}",
            )
            continue
        metrics.EVENTS_CONSUMED.labels(service, message.topic, type(delivery.event).TYPE).inc()
        for key in keys_of(delivery.event):
            await outputs.forward(OutboundRecord(key.encode(), message.value, list(delivery.raw_headers)))


def apply_record(
    message: Any, handlers: Handlers[B], new_batch: Callable[[], B], *, work: str
) -> tuple[Delivery, B] | str:
    """The delivery in `message`, applied by `handlers` to a new batch, and that batch; or why it was
    not: it cannot be read, `handlers` do not handle its type, or its handler failed. `work` says what
    the service does, as in "fraud scores order.placed only, not fraud.scored"."""
    try:
        delivery = decode_record(message)
    except PoisonRecord as poison:
        return str(poison)
    if not handlers.handles(delivery):
        handled = " or ".join(sorted(event_type.TYPE for event_type in handlers.event_types))
        return f"{work} {handled} only, not {type(delivery.event).TYPE}"
    batch = new_batch()
    try:
        handlers.dispatch(batch, [delivery])
    except Exception as error:  # noqa: BLE001 - one record that cannot be applied must not stop the agent
        return describe(error)
    return delivery, batch


async def dead_letter(send: Send, message: Any, *, service: str, dead_letter_topic: str, error: str) -> None:
    """Send a consumed record to `dead_letter_topic` with why and where it failed, its headers kept."""
    headers = dead_letter_headers(
        record_headers(message),
        error=error,
        consumer=service,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    await send(OutboundRecord(message.key, message.value or b"", headers))
    metrics.EVENTS_DEAD_LETTERED.labels(service, dead_letter_topic).inc()
    log.error("dead_lettered", source_topic=message.topic, source_offset=message.offset, error=error[:500])


async def broker_reachable(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap server accepts a TCP connection."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False

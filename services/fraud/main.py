"""Wires the fraud worker: settings, the faust app, its tables, agents and web views."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any

import faust
from faust.types import AgentT, TableT, TopicT
from pydantic import Field

from services.fraud import transport
from services.fraud.agents import (
    BY_CUSTOMER_TOPIC,
    DEAD_LETTER_TOPIC,
    OutboundRecord,
    Outputs,
    Send,
    route,
    score,
)
from services.fraud.api import register_routes
from services.fraud.domain import Rules
from services.fraud.handlers import SERVICE, FraudBatch
from shared.contracts import topics
from shared.kafka import ensure_topics, wait_for_broker
from shared.logging import configure_logging
from shared.settings import SharedSettings, load_settings


class FraudSettings(SharedSettings):
    fraud_port: int = 8003
    fraud_data_dir: str = ".run/fraud"
    fraud_review_above_fen: int = Field(default=2_000_000, ge=0)
    fraud_reject_above_fen: int = Field(default=5_000_000, ge=0)
    fraud_velocity_max_orders: int = Field(default=5, ge=1)
    fraud_velocity_window_s: float = Field(default=600.0, gt=0)
    fraud_blocked_customers: str = "cust-blocked-demo"

    def rules(self) -> Rules:
        return Rules(
            review_above_fen=self.fraud_review_above_fen,
            reject_above_fen=self.fraud_reject_above_fen,
            velocity_max_orders=self.fraud_velocity_max_orders,
            velocity_window_s=self.fraud_velocity_window_s,
            blocked_customers=frozenset(
                name.strip() for name in self.fraud_blocked_customers.split(",") if name.strip()
            ),
        )

    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.kafka_bootstrap_servers.split(",") if host.strip()]


@dataclass(frozen=True)
class FraudApp:
    """The faust app with the agents and tables that tests and the web views reach into."""

    app: faust.App
    route: AgentT[bytes]
    score: AgentT[bytes]
    scores: TableT[str, Any]
    history: TableT[str, Any]


def build_app(settings: FraudSettings, outputs: Outputs | None = None) -> FraudApp:
    """The app, its topics, tables and agents; `outputs` defaults to sending to the topics."""
    app = transport.App(
        SERVICE,
        broker=settings.broker_urls(),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        store="memory://",
        datadir=settings.fraud_data_dir,
        topic_partitions=settings.topic_partitions,
        web_port=settings.fraud_port,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        # Table contents are served only through our own view; faust's /table would expose them all.
        web_tables_enabled=False,
        producer_acks=-1,
        # The group coordinator holds a join for up to these; faust's 60 s defaults make every start slow.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    order_events = app.topic(topics.ORDER_EVENTS, **raw)
    by_customer = app.topic(BY_CUSTOMER_TOPIC, internal=True, partitions=settings.topic_partitions, **raw)
    if outputs is None:
        outputs = Outputs(
            forward=topic_sender(by_customer),
            publish=topic_sender(app.topic(topics.FRAUD_EVENTS, **raw)),
            dead_letter=topic_sender(app.topic(DEAD_LETTER_TOPIC, **raw)),
        )
    scores = app.Table("scores", partitions=settings.topic_partitions)
    history = app.Table("velocity", partitions=settings.topic_partitions)
    new_batch = partial(FraudBatch, scores, history, settings.rules())
    fraud = FraudApp(
        app=app,
        route=app.agent(order_events, name="route")(_bind(route, outputs=outputs)),
        score=app.agent(by_customer, name="score")(_bind(score, new_batch=new_batch, outputs=outputs)),
        scores=scores,
        history=history,
    )

    async def consumer_assigned() -> bool:
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its ABC
        if app.rebalancing or not recovery.completed.is_set():
            return False
        return any(tp.topic == BY_CUSTOMER_TOPIC for tp in app.consumer.assignment())

    async def broker_reachable() -> bool:
        return await _any_reachable(settings.kafka_bootstrap_servers)

    register_routes(app, scores=scores, readiness={"consumer": consumer_assigned, "kafka": broker_reachable})
    return fraud


def _bind(agent: Callable[..., Awaitable[None]], **dependencies: Any) -> Callable[..., Awaitable[None]]:
    """`agent` with its dependencies given, still named and documented as itself in faust's logs."""
    return update_wrapper(partial(agent, **dependencies), agent)


def topic_sender(topic: TopicT) -> Send:
    """A Send that writes to `topic` and returns once the broker has acknowledged the record."""

    async def send(record: OutboundRecord) -> None:
        # faust types header values as bytes; Kafka allows null ones, and aiokafka sends them as such.
        headers: Any = record.headers
        await (await topic.send(key=record.key, value=record.value, headers=headers))

    return send


async def _any_reachable(bootstrap_servers: str, timeout_s: float = 1.0) -> bool:
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


async def prepare(settings: FraudSettings) -> None:
    """Wait for the broker and create the shared topics faust does not own (dev/test brokers)."""
    await wait_for_broker(settings)
    await ensure_topics(settings, topics.ALL)


def main() -> None:
    settings = load_settings(FraudSettings)
    configure_logging(SERVICE, settings.log_level)
    asyncio.run(prepare(settings))
    # asyncio.run closed its loop; faust's worker runs on a fresh one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(settings).app
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.spinner = None  # a terminal spinner's escape codes would corrupt the JSON log stream
    worker.execute_from_commandline()

"""Wires the fraud worker: settings, the faust app with its tables and agents, and the HTTP app.

One process, one event loop: shared.runtime.serve runs uvicorn (the shared FastAPI app) and, as its
worker, the faust app (faust's documented `faust_app_running`, with faust's own web server off).
SIGTERM stops the HTTP server and the faust app, which commits and leaves its consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Any

import faust
from fastapi import FastAPI
from faust.contrib.asgi import faust_app_running
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
from services.fraud.api import build_router
from services.fraud.domain import Rules
from services.fraud.handlers import SERVICE, FraudBatch
from shared.auth import TokenVerifier
from shared.contracts import topics
from shared.http import ReadinessCheck, create_app
from shared.kafka import ensure_topics, wait_for_broker
from shared.logging import configure_logging
from shared.runtime import Worker, serve
from shared.settings import SharedSettings, load_settings

DESCRIPTION = (
    "Fraud scoring: every placed order is scored once against its customer's recent orders and the "
    "block list, and the decision (approve, review or reject, with a score and reasons) is published as "
    "FraudScored. Over HTTP, admin reads the decision stored for an order. Errors are RFC 9457 "
    "problem+json."
)


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
    """The faust app with the agents and tables that tests and the HTTP routes reach into."""

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
        # HTTP is the shared FastAPI app on FRAUD_PORT (http_app below); faust's aiohttp server, which
        # would also expose every table at /table, stays off.
        web_enabled=False,
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
    return FraudApp(
        app=app,
        route=app.agent(order_events, name="route")(_bind(route, outputs=outputs)),
        score=app.agent(by_customer, name="score")(_bind(score, new_batch=new_batch, outputs=outputs)),
        scores=scores,
        history=history,
    )


def readiness(app: faust.App, settings: FraudSettings) -> dict[str, ReadinessCheck]:
    """Ready: the app runs, holds partitions of its scoring topic with tables recovered, and the
    broker answers."""

    async def consumer_assigned() -> bool:
        if not app.started or app.should_stop:
            return False
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its ABC
        if app.rebalancing or not recovery.completed.is_set():
            return False
        return any(tp.topic == BY_CUSTOMER_TOPIC for tp in app.consumer.assignment())

    async def broker_reachable() -> bool:
        return await _any_reachable(settings.kafka_bootstrap_servers)

    return {"consumer": consumer_assigned, "kafka": broker_reachable}


def http_app(fraud: FraudApp, settings: FraudSettings) -> FastAPI:
    """The shared FastAPI app (health, readiness, metrics, problem+json, auth) with fraud's routes."""
    app = create_app(
        SERVICE,
        readiness=readiness(fraud.app, settings),
        token_verifier=TokenVerifier(settings),
        max_body_bytes=settings.http_max_body_bytes,
        description=DESCRIPTION,
    )
    app.include_router(build_router(fraud.scores))
    return app


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


async def main() -> None:
    settings = load_settings(FraudSettings)
    configure_logging(SERVICE, settings.log_level)
    await prepare(settings)
    # Built on the running loop, which faust_app_running binds the app to.
    fraud = build_app(settings)
    await serve(
        service=SERVICE,
        app=http_app(fraud, settings),
        host=settings.http_host,
        port=settings.fraud_port,
        workers=[faust_worker(fraud.app)],
    )

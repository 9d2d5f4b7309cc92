"""Wires the fraud worker: settings, the faust app, its tables, agents and web views."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import faust
from faust.types import StreamT
from pydantic import Field

from services.fraud.api import register_routes
from services.fraud.domain import Rules
from services.fraud.handlers import HANDLERS, SERVICE
from shared import metrics
from shared.contracts import decode_data, topics
from shared.kafka import dead_letter_headers, decode, encode, ensure_topics, headers_for, wait_for_broker
from shared.logging import configure_logging, correlation, get_logger
from shared.settings import SharedSettings, load_settings

log = get_logger(__name__)

# Orders re-keyed by customer, so that one customer's velocity lives in one partition (one worker).
BY_CUSTOMER_TOPIC = "fraud-orders-by-customer"
WANTED_TYPES = frozenset(event.TYPE for event in HANDLERS)


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


def build_app(settings: FraudSettings) -> faust.App:
    app = faust.App(
        SERVICE,
        broker=settings.broker_urls(),
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
    rules = settings.rules()
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    order_events = app.topic(topics.ORDER_EVENTS, **raw)
    order_dlq = app.topic(topics.dead_letter(topics.ORDER_EVENTS), **raw)
    fraud_events = app.topic(topics.FRAUD_EVENTS, **raw)
    by_customer = app.topic(BY_CUSTOMER_TOPIC, internal=True, partitions=settings.topic_partitions, **raw)
    scores = app.Table("scores", partitions=settings.topic_partitions)
    history = app.Table("velocity", partitions=settings.topic_partitions)

    async def dead_letter(message: Any, error: str) -> None:
        headers = dead_letter_headers(
            list(message.headers or ()),
            error=error,
            consumer=SERVICE,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        await (await order_dlq.send(key=message.key, value=message.value or b"", headers=headers))
        metrics.EVENTS_DEAD_LETTERED.labels(SERVICE, order_dlq.get_topic_name()).inc()
        log.error("dead_lettered", source_topic=message.topic, source_offset=message.offset, error=error)

    async def route(stream: StreamT[bytes]) -> None:
        """Pick the orders out of order.events and re-key them by customer."""
        async for event in stream.events():
            message = event.message
            try:
                envelope = decode(message.value)
            except ValueError as error:
                metrics.EVENTS_CONSUMED.labels(SERVICE, message.topic, "unknown").inc()
                await dead_letter(message, f"undecodable envelope: {error}")
                continue
            metrics.EVENTS_CONSUMED.labels(SERVICE, message.topic, envelope.type).inc()
            if envelope.type not in WANTED_TYPES:
                continue
            try:
                order = decode_data(envelope)
            except ValueError as error:
                await dead_letter(message, f"undecodable event: {error}")
                continue
            customer_id = str(getattr(order, "customer_id", order.subject()))
            await by_customer.send(key=customer_id.encode(), value=message.value, headers=message.headers)

    async def score(stream: StreamT[bytes]) -> None:
        """Score each order against its customer's history, once."""
        async for event in stream.events():
            message = event.message
            try:
                envelope = decode(message.value)
                order = decode_data(envelope)
                scored = HANDLERS[type(order)](envelope, order, scores=scores, history=history, rules=rules)
            except Exception as error:  # noqa: BLE001 - one unscorable record must not stop scoring for all
                await dead_letter(message, f"cannot score: {type(error).__name__}: {error}")
                continue
            with correlation(envelope.correlation_id, order_id=order.subject()):
                out = scored.envelope
                # Wait for the broker's ack so the offset is never committed ahead of the output.
                await (
                    await fraud_events.send(
                        key=out.subject.encode(), value=encode(out), headers=headers_for(out)
                    )
                )
                counter = metrics.EVENTS_DUPLICATE if scored.duplicate else metrics.EVENTS_APPLIED
                counter.labels(SERVICE, envelope.type).inc()
                log.info("fraud_scored", decision=out.data["decision"], duplicate=scored.duplicate)

    app.agent(order_events, name="route")(route)
    app.agent(by_customer, name="score")(score)

    async def consumer_assigned() -> bool:
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # on TableManager, not its ABC
        if app.rebalancing or not recovery.completed.is_set():
            return False
        return any(tp.topic == BY_CUSTOMER_TOPIC for tp in app.consumer.assignment())

    async def broker_reachable() -> bool:
        return await _any_reachable(settings.kafka_bootstrap_servers)

    register_routes(app, scores=scores, readiness={"consumer": consumer_assigned, "kafka": broker_reachable})
    return app


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
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.spinner = None  # a terminal spinner's escape codes would corrupt the JSON log stream
    worker.execute_from_commandline()

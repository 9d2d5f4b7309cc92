"""Bootstraps an aiokafka + MongoDB service, so each service's main.py only wires its own parts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter

from shared.auth import TokenVerifier
from shared.contracts import topics
from shared.crypto import PersonalData
from shared.errors import is_transient
from shared.http import ReadinessCheck, create_app
from shared.kafka import (
    BatchConsumer,
    BatchHandler,
    ensure_topics,
    make_consumer,
    make_producer,
    wait_for_broker,
)
from shared.logging import configure_logging
from shared.mongo import MongoStore, OutboxRelay, make_client
from shared.runtime import Cleanup, Worker, serve
from shared.settings import SharedSettings


@dataclass
class Plumbing:
    """The live clients a service's wiring receives."""

    settings: SharedSettings
    producer: AIOKafkaProducer
    store: MongoStore
    # The process's one key ring for personal data: its outbox is sealed with it, its stores use it.
    personal_data: PersonalData


@dataclass
class Wiring:
    """What a service adds on top of the shared plumbing."""

    routers: Sequence[APIRouter]
    handle_batch: BatchHandler | None = None
    subscribe: Sequence[str] = ()
    workers: Sequence[Worker] = ()
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    cleanup: Sequence[Cleanup] = ()
    description: str = ""  # the OpenAPI document's description of the service


async def run_service(
    *,
    service: str,
    settings: SharedSettings,
    port: int,
    db_name: str,
    wire: Callable[[Plumbing], Awaitable[Wiring]],
) -> None:
    configure_logging(service, settings.log_level)
    await wait_for_broker(settings)
    await ensure_topics(settings, topics.ALL)

    producer = make_producer(settings, client_id=service)
    await producer.start()
    client = make_client(settings)
    personal_data = PersonalData.from_settings(settings)
    store = MongoStore(client, db_name, sealer=personal_data)
    await store.wait_until_reachable(settings)
    await store.ensure_plumbing_indexes(settings)
    wiring = await wire(
        Plumbing(settings=settings, producer=producer, store=store, personal_data=personal_data)
    )

    async def kafka_ready() -> bool:
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2)
            return True
        except (KafkaError, TimeoutError, OSError):
            return False

    app = create_app(
        service,
        readiness={"kafka": kafka_ready, "mongo": store.ping, **wiring.readiness},
        token_verifier=TokenVerifier(settings),
        max_body_bytes=settings.http_max_body_bytes,
        description=wiring.description,
    )
    for router in wiring.routers:
        app.include_router(router)

    relay = OutboxRelay(service=service, store=store, producer=producer, settings=settings)
    workers: list[Worker] = [relay.run, *wiring.workers]
    if wiring.handle_batch is not None:
        consumer = BatchConsumer(
            service=service,
            consumer=make_consumer(settings, group_id=service, topics=wiring.subscribe),
            producer=producer,
            handle=wiring.handle_batch,
            settings=settings,
            is_transient=is_transient,
        )
        workers.append(consumer.run)

    async def close_mongo() -> None:
        await client.close()

    await serve(
        service=service,
        app=app,
        host=settings.http_host,
        port=port,
        workers=workers,
        # Closed in reverse: service extras first, then Mongo, and the producer last so the
        # relay's final drain and any dead letters still go out.
        cleanup=[producer.stop, close_mongo, *wiring.cleanup],
    )

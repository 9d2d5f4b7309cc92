"""Wires the order service: settings, Redis, the store, the saga consumer, the catalog replica (rebuilt
from inventory's tables at every start) and the deadline sweeper."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from functools import partial

from pydantic import Field, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.order import streams
from services.order.accounts import api as accounts_api
from services.order.accounts.store import MongoAccountStore
from services.order.api import GatewayLimits, build_router, rate_limited
from services.order.catalog import catalog_replica, table_consumer
from services.order.domain import Deadlines
from services.order.handlers import OrderService, enforce_deadlines, handle_batch
from services.order.numbers import RedisOrderNumbers
from services.order.store import MongoOrderStore
from services.order.throttle import Throttle, rule
from shared.auth import TokenIssuer, TokenVerifier
from shared.batching import Admission
from shared.contracts import topics
from shared.crypto import TokenSealer
from shared.runtime import every
from shared.service import Plumbing, Wiring, run_service
from shared.settings import SharedSettings, load_settings


class OrderSettings(SharedSettings):
    order_port: int = 8000
    order_db: str = "orders"
    # How long the saga waits for each step before it compensates on its own.
    order_checks_timeout_s: float = Field(default=30.0, gt=0)
    order_review_timeout_s: float = Field(default=3600.0, gt=0)
    order_payment_timeout_s: float = Field(default=120.0, gt=0)
    order_deadline_scan_interval_s: float = Field(default=1.0, gt=0)
    # How long a sweeper's claim keeps other replicas off the overdue orders it took.
    order_deadline_claim_s: float = Field(default=30.0, gt=0)
    # A retry with the same Idempotency-Key within this long returns the first order.
    order_idempotency_key_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # Orders being placed at once per process, and how long the oldest may have been in progress;
    # past either, POST /v1/orders answers 503 with Retry-After at once instead of queueing.
    order_max_in_progress: int = Field(default=256, ge=1)
    order_max_in_progress_age_s: float = Field(default=0.5, gt=0)
    # Requests per client (a token's subject, or the address of an anonymous client), in the
    # `limits` notation; the guest lookup has its own, tighter limits against contact guessing.
    order_rate_limit: str = "600/minute"
    order_lookup_rate_limit_per_client: str = "20/minute"
    order_lookup_rate_limit_per_order: str = "10/hour"
    # How long a guest's token for their order lasts.
    order_guest_token_ttl_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    # Analysts' live streams (GET /v1/streams/orders). Each holds a Kafka consumer, so a process
    # serves at most this many at once; past it, 503 with Retry-After. A keep-alive comment every
    # ping interval keeps proxies from closing an idle stream; a client that takes longer than the
    # send timeout to accept an event is dropped.
    order_stream_max_connections: int = Field(default=50, ge=1)
    order_stream_ping_s: float = Field(default=15.0, gt=0)
    order_stream_send_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator(
        "order_rate_limit", "order_lookup_rate_limit_per_client", "order_lookup_rate_limit_per_order"
    )
    @classmethod
    def _a_limit(cls, value: str) -> str:
        rule(value)  # raises ValueError naming what it could not read
        return value

    def gateway_limits(self) -> GatewayLimits:
        return GatewayLimits(
            per_client=self.order_rate_limit,
            lookup_per_client=self.order_lookup_rate_limit_per_client,
            lookup_per_order=self.order_lookup_rate_limit_per_order,
            guest_token_ttl=timedelta(seconds=self.order_guest_token_ttl_s),
        )

    def stream_limits(self) -> streams.StreamLimits:
        return streams.StreamLimits(
            max_connections=self.order_stream_max_connections,
            ping_s=self.order_stream_ping_s,
            send_timeout_s=self.order_stream_send_timeout_s,
            max_records=self.consumer_max_records,
        )

    def deadlines(self) -> Deadlines:
        return Deadlines(
            checks=timedelta(seconds=self.order_checks_timeout_s),
            review=timedelta(seconds=self.order_review_timeout_s),
            payment=timedelta(seconds=self.order_payment_timeout_s),
        )


async def main() -> None:
    settings = load_settings(OrderSettings)

    async def wire(plumbing: Plumbing) -> Wiring:
        redis = Redis.from_url(settings.redis_url)
        personal = plumbing.personal_data
        token_sealer = TokenSealer(settings.payment_token_public_key)
        store = MongoOrderStore(plumbing.store, personal, token_sealer)
        await store.ensure_indexes(idempotency_key_ttl_s=settings.order_idempotency_key_ttl_s)
        account_store = MongoAccountStore(plumbing.store, personal)
        await account_store.ensure_indexes()
        issuer = TokenIssuer(settings)
        throttle = Throttle.over_redis(settings.redis_url)
        service = OrderService(
            store=store,
            numbers=RedisOrderNumbers(redis),
            deadlines=settings.deadlines(),
            token_sealer=token_sealer,
            sweeper_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            sweep_lease=timedelta(seconds=settings.order_deadline_claim_s),
            admission=Admission(settings.order_max_in_progress, settings.order_max_in_progress_age_s),
        )

        catalog = catalog_replica(settings, service, table_consumer(settings), plumbing.producer)

        async def redis_ready() -> bool:
            try:
                return bool(await redis.ping())
            except RedisError:
                return False

        gateway = build_router(
            service,
            issuer=issuer,
            personal=personal,
            addresses=account_store,
            throttle=throttle,
            limits=settings.gateway_limits(),
        )
        return Wiring(
            routers=[
                gateway,
                rate_limited(
                    accounts_api.build_router(account_store, issuer, TokenVerifier(settings)),
                    throttle,
                    settings.order_rate_limit,
                ),
                rate_limited(
                    streams.build_router(streams.plain_consumers(settings), settings.stream_limits()),
                    throttle,
                    settings.order_rate_limit,
                ),
            ],
            handle_batch=partial(handle_batch, service),
            subscribe=[topics.INVENTORY_EVENTS, topics.FRAUD_EVENTS, topics.PAYMENT_EVENTS],
            workers=[
                every(
                    settings.order_deadline_scan_interval_s,
                    lambda: enforce_deadlines(service),
                    name="deadline_sweeper",
                ),
                catalog.worker,
            ],
            # Not ready until the catalog replica holds what inventory's tables held at start.
            readiness={"redis": redis_ready, "catalog": catalog.ready},
            cleanup=[redis.aclose],
        )

    await run_service(
        service="order", settings=settings, port=settings.order_port, db_name=settings.order_db, wire=wire
    )

"""Wires the payment service: settings, the store, the provider adapters, the order-events consumer,
the operations worker and the reconciler."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from functools import partial
from typing import Self

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from services.payment.adapters import ProviderSettings, build_providers
from services.payment.api import build_callback_router, build_router
from services.payment.handlers import SERVICE, PaymentPolicy, PaymentService, handle_batch, reconcile
from services.payment.store import MongoPaymentStore
from services.payment.worker import OperationWorker
from shared.contracts import topics
from shared.crypto import TokenOpener, token_public_key
from shared.runtime import every
from shared.service import Plumbing, Wiring, run_service
from shared.settings import DEV_PAYMENT_TOKEN_PRIVATE_KEY, load_settings

DESCRIPTION = (
    "Payments of orders: one per order, authorized with the order's payment method (a bank card at "
    "once; WeChat Pay and Alipay once the payer pays on the provider's page), captured when the order "
    "is confirmed, voided or refunded when it ends, refunded in part or whole on request. Reads: admin "
    "reads every payment; a customer the payments of their own orders and a guest token the payment of "
    "its order; anyone else's is 404; merchants are refused (403). Providers' callbacks are "
    "authenticated by their signatures, not by bearer tokens. Errors are RFC 9457 problem+json."
)


class PaymentSettings(ProviderSettings):
    payment_port: int = 8002
    payment_db: str = "payments"
    # Opens the provider tokens the gateway seals to PAYMENT_TOKEN_PUBLIC_KEY (`shopctl keys payment-token`).
    payment_token_private_key: SecretStr = SecretStr(DEV_PAYMENT_TOKEN_PRIVATE_KEY)
    # Provider calls this process makes at once.
    payment_provider_concurrency: int = Field(default=8, ge=1)
    # How often the worker looks for due operations when no new one wakes it.
    payment_worker_poll_s: float = Field(default=0.5, gt=0)
    # How long a replica's claim on an operation keeps the others off it: a replica that dies
    # mid-call leaves the call to be made again this long after. Longer than a provider call.
    payment_operation_lease_s: float = Field(default=30.0, gt=0)
    # How long an authorization may keep failing to reach the provider (counted from the request)
    # before the payment fails with PROVIDER_TIMEOUT.
    payment_provider_deadline_s: float = Field(default=30.0, gt=0)
    # The longest wait between two tries of a capture, void or refund (retried until they pass).
    payment_retry_max_backoff_s: float = Field(default=60.0, gt=0)
    # Where providers send callbacks; by default this process's own address.
    payment_callback_base_url: str | None = None
    # Payments waiting for the payer longer than the second are asked about every first.
    payment_reconcile_interval_s: float = Field(default=15.0, gt=0)
    payment_reconcile_after_s: float = Field(default=60.0, gt=0)
    # How long accepted callback nonces are kept to refuse replays: past the callbacks' allowed clock
    # skew a replay is refused as stale anyway.
    payment_callback_nonce_ttl_s: float = Field(default=24 * 3600.0, gt=0)

    @field_validator("payment_token_private_key")
    @classmethod
    def _a_private_key(cls, value: SecretStr) -> SecretStr:
        TokenOpener(value)  # raises ValueError naming the setting when it is not a key
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (
            token_public_key(self.payment_token_private_key.get_secret_value())
            != self.payment_token_public_key
        ):
            raise ValueError(
                "PAYMENT_TOKEN_PRIVATE_KEY does not match PAYMENT_TOKEN_PUBLIC_KEY: the gateway would seal "
                "tokens this service cannot open"
            )
        if self.payment_operation_lease_s <= self.provider_call_timeout_s:
            raise ValueError(
                f"PAYMENT_OPERATION_LEASE_S ({self.payment_operation_lease_s:g}) must exceed "
                f"PROVIDER_CALL_TIMEOUT_S ({self.provider_call_timeout_s:g}): a claim must outlast the call"
            )
        if self.payment_callback_nonce_ttl_s <= self.provider_callback_max_skew_s:
            raise ValueError(
                f"PAYMENT_CALLBACK_NONCE_TTL_S ({self.payment_callback_nonce_ttl_s:g}) must exceed "
                f"PROVIDER_CALLBACK_MAX_SKEW_S ({self.provider_callback_max_skew_s:g}): a replay must meet "
                "its nonce for as long as its timestamp is accepted"
            )
        return self

    def policy(self) -> PaymentPolicy:
        return PaymentPolicy(
            deadline=timedelta(seconds=self.payment_provider_deadline_s),
            max_backoff=timedelta(seconds=self.payment_retry_max_backoff_s),
            callback_base_url=self.payment_callback_base_url
            or f"http://{self.http_host}:{self.payment_port}",
        )


async def main() -> None:
    settings = load_settings(PaymentSettings)

    async def wire(plumbing: Plumbing) -> Wiring:
        store = MongoPaymentStore(plumbing.store, plumbing.personal_data)
        await store.ensure_indexes(nonce_ttl_s=settings.payment_callback_nonce_ttl_s)
        client = httpx.AsyncClient(timeout=settings.provider_call_timeout_s)
        service = PaymentService(
            store=store,
            providers=build_providers(settings, client),
            opener=TokenOpener(settings.payment_token_private_key),
            policy=settings.policy(),
        )
        worker = OperationWorker(
            service,
            concurrency=settings.payment_provider_concurrency,
            poll_s=settings.payment_worker_poll_s,
            lease=timedelta(seconds=settings.payment_operation_lease_s),
            owner=f"{socket.gethostname()}:{os.getpid()}",
            outage_limit_s=settings.dependency_outage_limit_s,
        )
        reconcile_after = timedelta(seconds=settings.payment_reconcile_after_s)

        return Wiring(
            routers=[build_router(store), build_callback_router(service)],
            handle_batch=partial(handle_batch, service),
            subscribe=[topics.ORDER_EVENTS],
            workers=[
                worker.run,
                every(
                    settings.payment_reconcile_interval_s,
                    lambda: reconcile(service, after=reconcile_after),
                    name="payment_reconciler",
                ),
            ],
            cleanup=[client.aclose],
            description=DESCRIPTION,
        )

    await run_service(
        service=SERVICE,
        settings=settings,
        port=settings.payment_port,
        db_name=settings.payment_db,
        wire=wire,
    )

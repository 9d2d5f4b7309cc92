"""Wires the payment service: settings, the store, the provider adapters and the order-events consumer."""

from __future__ import annotations

from functools import partial

from services.payment.api import build_router
from services.payment.handlers import SERVICE, PaymentService, handle_batch
from services.payment.providers import sandbox_providers
from services.payment.store import MongoPaymentStore
from shared.contracts import topics
from shared.service import Plumbing, Wiring, run_service
from shared.settings import SharedSettings, load_settings


class PaymentSettings(SharedSettings):
    payment_port: int = 8002
    payment_db: str = "payments"


async def main() -> None:
    settings = load_settings(PaymentSettings)

    async def wire(plumbing: Plumbing) -> Wiring:
        store = MongoPaymentStore(plumbing.store)
        await store.ensure_indexes()
        # Only sandbox adapters exist, so every method is served by the sandbox, in every environment.
        service = PaymentService(store=store, providers=sandbox_providers())

        return Wiring(
            routers=[build_router(store)],
            handle_batch=partial(handle_batch, service),
            subscribe=[topics.ORDER_EVENTS],
        )

    await run_service(
        service=SERVICE,
        settings=settings,
        port=settings.payment_port,
        db_name=settings.payment_db,
        wire=wire,
    )

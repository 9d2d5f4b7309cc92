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

DESCRIPTION = (
    "Payments of orders: one per order, authorized with the order's payment method and voided when its "
    "order is cancelled. Read-only over HTTP: admin reads every payment; a customer "
    "the payments of their own orders and a guest token the payment of its order; anyone else's is 404. "
    "Merchants are refused (403). Errors are RFC 9457 problem+json."
)


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
            description=DESCRIPTION,
        )

    await run_service(
        service=SERVICE,
        settings=settings,
        port=settings.payment_port,
        db_name=settings.payment_db,
        wire=wire,
    )

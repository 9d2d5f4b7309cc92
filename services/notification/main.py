"""Wires the notification service: settings, the notification log, its channels and the consumer."""

from __future__ import annotations

from functools import partial

from services.notification.api import build_router
from services.notification.channels import default_channels
from services.notification.handlers import SERVICE, NotificationService, handle_batch
from services.notification.store import MongoNotificationStore
from shared.contracts import topics
from shared.service import Plumbing, Wiring, run_service
from shared.settings import SharedSettings, load_settings

DESCRIPTION = (
    "The notification log: every message the platform sends about an order (a merchant's new-order "
    "notice, a customer's confirmation, rejection or cancellation, a refund completed, a payment that "
    "arrived after its order ended and was given back, the codes of a paid virtual product), and "
    "about products (a customer's back-in-stock notice, a merchant's low-stock warning), with its "
    "delivery outcome; codes are shown to their recipient only. "
    "A customer, merchant or guest token lists the notifications addressed to it; admin lists anyone's. "
    "Errors are RFC 9457 problem+json."
)


class NotificationSettings(SharedSettings):
    notification_port: int = 8004
    notification_db: str = "notifications"


async def main() -> None:
    settings = load_settings(NotificationSettings)

    async def wire(plumbing: Plumbing) -> Wiring:
        store = MongoNotificationStore(plumbing.store)
        await store.ensure_indexes()
        service = NotificationService(store=store, channels=default_channels())

        return Wiring(
            routers=[build_router(service, personal=plumbing.personal_data)],
            handle_batch=partial(handle_batch, service),
            subscribe=[topics.ORDER_EVENTS, topics.PAYMENT_EVENTS, topics.INVENTORY_EVENTS],
            description=DESCRIPTION,
        )

    await run_service(
        service=SERVICE,
        settings=settings,
        port=settings.notification_port,
        db_name=settings.notification_db,
        wire=wire,
    )

"""Wires the inventory service: settings, the store, the order-event consumer and the expiry sweeper."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from pydantic import Field

from services.inventory.announce import announce_catalog
from services.inventory.api import build_router
from services.inventory.domain import DEFAULT_MAX_HOLD
from services.inventory.handlers import Inventory, handle_batch, release_expired
from services.inventory.store import MongoInventoryStore
from shared.contracts import topics
from shared.runtime import every
from shared.service import Plumbing, Wiring, run_service
from shared.settings import SharedSettings, load_settings

DESCRIPTION = (
    "Merchants, the catalog and its stock, and the reservations orders hold. Catalog reads are public; "
    "a product's edits and stock changes need its merchant's token or an admin's, and a merchant is "
    "registered by itself (PENDING until an admin approves it) or created by an admin. Only an "
    "approved merchant's products are listed and reserved; suspending a merchant delists them. A "
    "product edit never changes stock: stock moves only through POST /v1/products/{sku}/stock and "
    "orders' reservations. Errors are RFC 9457 problem+json."
)


class InventorySettings(SharedSettings):
    inventory_port: int = 8001
    inventory_db: str = "inventory"
    # How long stock stays held for an order that is neither confirmed nor ended.
    inventory_reservation_ttl_s: float = Field(default=900.0, gt=0)
    # The longest one order may hold stock: a reservation lasts as long as its order may still be
    # approved and paid, but never longer than this (operators bound how long stock can be locked).
    inventory_max_hold_s: float = Field(default=DEFAULT_MAX_HOLD.total_seconds(), gt=0)
    inventory_expiry_scan_interval_s: float = Field(default=5.0, gt=0)


async def main() -> None:
    settings = load_settings(InventorySettings)

    async def wire(plumbing: Plumbing) -> Wiring:
        store = MongoInventoryStore(plumbing.store, plumbing.personal_data)
        await store.ensure_indexes()
        service = Inventory(
            store=store,
            reservation_ttl=timedelta(seconds=settings.inventory_reservation_ttl_s),
            max_hold=timedelta(seconds=settings.inventory_max_hold_s),
            allow_http_webhooks=settings.is_dev,
        )
        # Refill the catalog tables before serving (see services/inventory/announce.py).
        await announce_catalog(service)

        return Wiring(
            routers=[build_router(service)],
            description=DESCRIPTION,
            handle_batch=partial(handle_batch, service),
            subscribe=[topics.ORDER_EVENTS],
            workers=[
                every(
                    settings.inventory_expiry_scan_interval_s,
                    lambda: release_expired(service),
                    name="expiry_sweeper",
                )
            ],
        )

    await run_service(
        service="inventory",
        settings=settings,
        port=settings.inventory_port,
        db_name=settings.inventory_db,
        wire=wire,
    )

"""Wires the inventory service: settings, the store, the order-event consumer and the expiry sweeper."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from functools import partial

from pydantic import Field

from services.inventory.announce import announce_catalog
from services.inventory.api import build_router, build_signals_router
from services.inventory.domain import DEFAULT_MAX_HOLD, QualityRules
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
    # Merchant quality (README, "Merchant quality"): an approved merchant is suspended automatically
    # when, over the orders confirmed since its last reinstatement, its refund or complaint rate
    # exceeds its limit (judged from MIN_ORDERS orders on) or its average rating falls below the
    # minimum (judged from MIN_REVIEWS reviews on).
    inventory_quality_auto_suspend: bool = True
    inventory_quality_min_orders: int = Field(default=20, ge=1)
    inventory_quality_max_refund_rate: float = Field(default=0.3, gt=0, le=1)
    inventory_quality_max_complaint_rate: float = Field(default=0.2, gt=0, le=1)
    inventory_quality_min_rating: float = Field(default=3.0, ge=1, le=5)
    inventory_quality_min_reviews: int = Field(default=10, ge=1)

    def quality_rules(self) -> QualityRules:
        # Fractions from the decimal text, so a 0.3 limit is exactly 3/10 and 30% of 20 orders is 6.
        return QualityRules(
            min_orders=self.inventory_quality_min_orders,
            max_refund_rate=Fraction(str(self.inventory_quality_max_refund_rate)),
            max_complaint_rate=Fraction(str(self.inventory_quality_max_complaint_rate)),
            min_rating=Fraction(str(self.inventory_quality_min_rating)),
            min_reviews=self.inventory_quality_min_reviews,
            auto_suspend=self.inventory_quality_auto_suspend,
        )


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
            quality_rules=settings.quality_rules(),
        )
        # Refill the catalog tables before serving (see services/inventory/announce.py).
        await announce_catalog(service)

        return Wiring(
            routers=[build_signals_router(service), build_router(service)],
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

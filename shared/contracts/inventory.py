"""Events the inventory service owns (topic `inventory.events`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.contracts.base import Event, register
from shared.contracts.common import CURRENCY, Fen, ProductKind, StockLine
from shared.contracts.topics import INVENTORY_EVENTS


class _InventoryEvent(Event):
    TOPIC = INVENTORY_EVENTS


@register
class ProductUpserted(_InventoryEvent):
    """A product was created or changed; key = sku. Other services keep catalog replicas from it."""

    TYPE = "inventory.product_upserted"
    sku: str
    name: str
    merchant_id: str
    kind: ProductKind = ProductKind.PHYSICAL
    price_fen: Fen
    currency: str = CURRENCY
    active: bool = True

    def subject(self) -> str:
        return self.sku


@register
class StockReserved(_InventoryEvent):
    """Every line of the order is held until `expires_at`."""

    TYPE = "inventory.stock_reserved"
    order_id: str
    lines: list[StockLine]
    expires_at: datetime


class Shortage(StockLine):
    """A line inventory could not hold: `quantity` asked, `available` on hand."""

    available: int = Field(ge=0)


@register
class StockRejected(_InventoryEvent):
    """Nothing was held: at least one line is short. Substitutes are in-stock SKUs of the same merchant."""

    TYPE = "inventory.stock_rejected"
    order_id: str
    reason: str = "OUT_OF_STOCK"
    shortages: list[Shortage] = []
    substitutes: list[str] = []


@register
class StockReleased(_InventoryEvent):
    """A reservation went back to available stock (order rejected, cancelled, or expired)."""

    TYPE = "inventory.stock_released"
    order_id: str
    lines: list[StockLine]
    reason: str


@register
class StockCommitted(_InventoryEvent):
    """A reservation became a sale: the stock has left for good."""

    TYPE = "inventory.stock_committed"
    order_id: str
    lines: list[StockLine]

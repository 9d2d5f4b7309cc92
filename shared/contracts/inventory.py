"""Events the inventory service owns (topic `inventory.events`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.contracts.base import Event, OrderEvent, register
from shared.contracts.common import CURRENCY, Fen, PaymentMethod, ProductKind, StockLine
from shared.contracts.order import OrderEndReason
from shared.contracts.topics import INVENTORY_EVENTS

# The most units of one product an order may hold, unless the merchant sets a lower limit.
MAX_UNITS_PER_ORDER = 999


class StockRejectReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"


class ReservationEndReason(StrEnum):
    """Why held stock went back on inventory's own account, not because its order ended."""

    EXPIRED = "EXPIRED"


class _StockEvent(OrderEvent):
    TOPIC = INVENTORY_EVENTS


@register
class ProductUpserted(Event):
    """A product was created or changed; key = sku. Other services keep catalog replicas from it."""

    TOPIC = INVENTORY_EVENTS
    TYPE = "inventory.product_upserted"
    sku: str
    name: str
    merchant_id: str
    kind: ProductKind = ProductKind.PHYSICAL
    price_fen: Fen
    currency: str = CURRENCY
    active: bool = True
    # Added after v1 with a default, so earlier ProductUpserted events still decode (as no limit).
    max_per_order: int = Field(default=MAX_UNITS_PER_ORDER, ge=1, le=MAX_UNITS_PER_ORDER)

    def subject(self) -> str:
        return self.sku


@register
class MerchantUpserted(Event):
    """A merchant was registered or changed; key = merchant_id. The gateway keeps a replica of it to
    refuse a payment method the merchant does not accept."""

    TOPIC = INVENTORY_EVENTS
    TYPE = "inventory.merchant_upserted"
    merchant_id: str
    name: str
    payment_methods: list[PaymentMethod] = Field(min_length=1)

    def subject(self) -> str:
        return self.merchant_id


@register
class StockReserved(_StockEvent):
    """Every line of the order is held until `expires_at`."""

    TYPE = "inventory.stock_reserved"
    lines: list[StockLine]
    expires_at: datetime


class Shortage(StockLine):
    """A line inventory could not hold: `quantity` asked, `available` on hand."""

    available: int = Field(ge=0)


@register
class StockRejected(_StockEvent):
    """Nothing was held: at least one line is short. Substitutes are in-stock SKUs of the same merchant."""

    TYPE = "inventory.stock_rejected"
    reason: StockRejectReason = StockRejectReason.OUT_OF_STOCK
    shortages: list[Shortage] = []
    substitutes: list[str] = []


@register
class StockReleased(_StockEvent):
    """A reservation went back to available stock (order rejected, cancelled, or expired)."""

    TYPE = "inventory.stock_released"
    lines: list[StockLine]
    # The order's end reason when it ended, or EXPIRED when the reservation ran out on its own.
    reason: OrderEndReason | ReservationEndReason


@register
class StockCommitted(_StockEvent):
    """A reservation became a sale: the stock has left for good."""

    TYPE = "inventory.stock_committed"
    lines: list[StockLine]

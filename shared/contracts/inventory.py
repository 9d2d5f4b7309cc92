"""Events the inventory service owns (topic `inventory.events`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Event, OrderEvent, register
from shared.contracts.common import CURRENCY, Fen, PaymentMethod, ProductKind, StockLine
from shared.contracts.order import OrderEndReason
from shared.contracts.topics import INVENTORY_EVENTS, INVENTORY_MERCHANTS, INVENTORY_PRODUCTS

# The most units of one product an order may hold, unless the merchant sets a lower limit.
MAX_UNITS_PER_ORDER = 999


class MerchantStatus(StrEnum):
    """Where a merchant stands in vetting: only an APPROVED merchant's products can be ordered."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    SUSPENDED = "SUSPENDED"


class StockRejectReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    # An order was paid after its reservation had expired, and the stock had gone meanwhile.
    RESERVATION_LOST = "RESERVATION_LOST"


class ReservationEndReason(StrEnum):
    """Why held stock went back on inventory's own account, not because its order ended."""

    EXPIRED = "EXPIRED"


class _StockEvent(OrderEvent):
    TOPIC = INVENTORY_EVENTS


class PriceTier(BaseModel):
    """A wholesale price: from `min_quantity` units of a product in one order, each unit costs
    `unit_price_fen`."""

    model_config = ConfigDict(frozen=True)

    min_quantity: int = Field(ge=2)
    unit_price_fen: Fen


@register
class ProductUpserted(Event):
    """A product was created or changed; key = sku. Other services keep catalog replicas from it.

    On `inventory.products`, a compacted topic: the latest of each product stays on it for good."""

    TOPIC = INVENTORY_PRODUCTS
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
    # Quantity tiers, by rising min_quantity and falling price: the highest tier an order line
    # reaches sets its unit price. Empty: `price_fen` whatever the quantity.
    price_tiers: list[PriceTier] = []

    def subject(self) -> str:
        return self.sku


@register
class MerchantUpserted(Event):
    """A merchant was registered or changed; key = merchant_id. The gateway keeps a replica of it to
    refuse a payment method the merchant does not accept and the products of a merchant that is not
    approved; notification takes the webhook URL from it.

    On `inventory.merchants`, a compacted topic: the latest of each merchant stays on it for good."""

    TOPIC = INVENTORY_MERCHANTS
    TYPE = "inventory.merchant_upserted"
    merchant_id: str
    name: str
    payment_methods: list[PaymentMethod] = Field(min_length=1)
    # Merchants published before vetting existed were all selling: they read as approved.
    status: MerchantStatus = MerchantStatus.APPROVED
    reason: str = Field(default="", description="Why the merchant was rejected or suspended, in words.")
    webhook_url: str | None = Field(default=None, description="Where the merchant's notifications go.")

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

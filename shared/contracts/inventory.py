"""Events the inventory service owns (topic `inventory.events`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Event, OrderEvent, register
from shared.contracts.common import CURRENCY, Fen, PaymentMethod, ProductKind, StockLine
from shared.contracts.order import OrderEndReason
from shared.contracts.topics import (
    INVENTORY_COUPONS,
    INVENTORY_EVENTS,
    INVENTORY_MERCHANTS,
    INVENTORY_PRODUCTS,
)

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
    # The stock was there but the order's coupon was not: no use left, or used by this customer already.
    COUPON_UNAVAILABLE = "COUPON_UNAVAILABLE"


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


class ServiceSlot(BaseModel):
    """A bookable time slot of a `service` product; an order line books it by `slot_id`. How many
    bookings it takes is its stock, which only inventory knows."""

    model_config = ConfigDict(frozen=True)

    slot_id: str
    starts_at: datetime
    ends_at: datetime


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
    description: str = ""
    # Substitutes for a product out of stock are taken from its category.
    category: str = ""
    attributes: dict[str, str] = Field(default_factory=dict, description="Colour, size, duration...")
    payment_methods: list[PaymentMethod] = Field(
        default_factory=list,
        description="The methods this product may be paid with; empty: every method its merchant accepts.",
    )
    # The time slots of a `service` product that can still be booked; empty for other kinds.
    slots: list[ServiceSlot] = []

    def subject(self) -> str:
        return self.sku


class CouponDiscount(StrEnum):
    PERCENT = "percent"
    AMOUNT = "amount"


@register
class CouponUpserted(Event):
    """A merchant's coupon was created or changed; key = code. The gateway prices orders from its
    replica; inventory alone counts the uses, held with an order's stock.

    On `inventory.coupons`, a compacted topic: the latest of each coupon stays on it for good."""

    TOPIC = INVENTORY_COUPONS
    TYPE = "inventory.coupon_upserted"
    code: str
    merchant_id: str
    discount: CouponDiscount
    # PERCENT: 1-100 (per cent off the merchant's lines); AMOUNT: fen off, at most the lines' total.
    value: int = Field(gt=0)
    min_spend_fen: Fen = Field(default=0, description="The merchant's lines must total at least this.")
    valid_from: datetime
    valid_until: datetime
    total_uses: int = Field(gt=0)
    once_per_customer: bool = True
    active: bool = True

    def subject(self) -> str:
        return self.code


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
    """Nothing was held: at least one line is short, or the coupon had no use left for this customer.
    Substitutes are up to three SKUs on sale and in stock from the short products' categories,
    closest in price first."""

    TYPE = "inventory.stock_rejected"
    reason: StockRejectReason = StockRejectReason.OUT_OF_STOCK
    shortages: list[Shortage] = []
    substitutes: list[str] = []
    detail: str = Field(
        default="", description="In words, for COUPON_UNAVAILABLE: why the coupon was refused."
    )


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


class AssignedCodes(BaseModel):
    """The codes a virtual product's order line was given, each sealed with the platform's personal-data
    key ring (shared.crypto.PersonalData): never in clear on the wire."""

    model_config = ConfigDict(frozen=True)

    sku: str
    sealed_codes: list[str] = Field(min_length=1)


@register
class CodesAssigned(_StockEvent):
    """A paid order's virtual lines were given their codes, each code to one order only (a reusable
    code to every order of its product): the order is fulfilled, and the buyer alone may see them."""

    TYPE = "inventory.codes_assigned"
    customer_id: str
    lines: list[AssignedCodes] = Field(min_length=1)


@register
class BackInStock(Event):
    """A product that was out of stock was restocked; key = sku. Notification tells each subscriber
    once: a subscription is used up by the event that names it. A long list comes as several events."""

    TOPIC = INVENTORY_EVENTS
    TYPE = "inventory.back_in_stock"
    sku: str
    name: str
    merchant_id: str
    available: int = Field(ge=1)
    customer_ids: list[str] = Field(min_length=1)

    def subject(self) -> str:
        return self.sku


@register
class LowStock(Event):
    """A product's sellable stock fell to or below its merchant's threshold; key = sku. Once per
    crossing: it is announced again only after a restock has lifted it above the threshold."""

    TOPIC = INVENTORY_EVENTS
    TYPE = "inventory.low_stock"
    sku: str
    name: str
    merchant_id: str
    available: int = Field(ge=0)
    threshold: int = Field(ge=0)

    def subject(self) -> str:
        return self.sku

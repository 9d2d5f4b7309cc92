"""Events the order service owns (topic `order.events`, key = order id)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.contracts.base import OrderEvent, register
from shared.contracts.common import (
    CURRENCY,
    Fen,
    OrderLine,
    PaymentMethod,
    ShippingAddress,
)
from shared.contracts.topics import ORDER_EVENTS


class OrderEndReason(StrEnum):
    """Why an order ended before completing: stable codes that clients and analysts match on."""

    OUT_OF_STOCK = "OUT_OF_STOCK"
    FRAUD = "FRAUD"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    STOCK_TIMEOUT = "STOCK_TIMEOUT"
    FRAUD_TIMEOUT = "FRAUD_TIMEOUT"
    REVIEW_TIMEOUT = "REVIEW_TIMEOUT"
    PAYMENT_TIMEOUT = "PAYMENT_TIMEOUT"
    CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"


class _OrderEvent(OrderEvent):
    TOPIC = ORDER_EVENTS


@register
class OrderPlaced(_OrderEvent):
    """A client placed an order; inventory reserves stock and fraud scores it in parallel."""

    TYPE = "order.placed"
    order_no: str
    customer_id: str
    lines: list[OrderLine] = Field(min_length=1)
    total_fen: Fen
    currency: str = CURRENCY
    payment_method: PaymentMethod
    shipping_address: ShippingAddress
    placed_at: datetime


@register
class PaymentRequested(_OrderEvent):
    """Stock is held and fraud approved: payment may charge the customer."""

    TYPE = "order.payment_requested"
    customer_id: str
    amount_fen: Fen
    currency: str = CURRENCY
    method: PaymentMethod
    token: str = Field(description="Provider token; card data never enters the system.")


@register
class OrderConfirmed(_OrderEvent):
    """Payment is authorized: inventory commits the stock, notification tells both sides."""

    TYPE = "order.confirmed"
    order_no: str
    customer_id: str
    lines: list[OrderLine]
    total_fen: Fen
    currency: str = CURRENCY
    payment_id: str


@register
class OrderRejected(_OrderEvent):
    """The order ended before payment (out of stock, fraud, a deadline); any held stock goes back."""

    TYPE = "order.rejected"
    order_no: str
    customer_id: str
    reason: OrderEndReason
    detail: str = ""


@register
class OrderCancelled(_OrderEvent):
    """The order ended after payment was requested; held stock goes back, any authorization is voided."""

    TYPE = "order.cancelled"
    order_no: str
    customer_id: str
    reason: OrderEndReason
    detail: str = ""

"""Events the order service owns (topic `order.events`, key = order id)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from pydantic import Field

from shared.contracts.base import JsonDict, OrderEvent, register
from shared.contracts.common import (
    CURRENCY,
    CouponApplied,
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
    # The payment provider did not answer within the payment's deadline.
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    # Paid, but its reservation had expired and the stock was gone: cancelled and refunded in full.
    RESERVATION_LOST = "RESERVATION_LOST"
    # The coupon had no use left, or this customer had used it already, when stock was reserved.
    COUPON_UNAVAILABLE = "COUPON_UNAVAILABLE"


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
    coupon: CouponApplied | None = Field(
        default=None,
        description="The coupon applied: `total_fen` is the lines' total less its discount. Inventory "
        "holds one of its uses with the stock, all or nothing.",
    )
    hold_until: datetime | None = Field(
        default=None,
        description="The latest the order may still be approved and paid: inventory holds its stock "
        "until then (within its own cap), unless the order ends first.",
    )


def _upcast_payment_requested_v1_v2(payload: JsonDict) -> JsonDict:
    """v1 carried the provider token in clear; v2 carries it sealed for the payment service.

    A v1 token is moved as it is: the payment service cannot open it, so it fails the payment
    (INVALID_TOKEN) rather than ever charging with a token that travelled in clear."""
    upcast = {key: value for key, value in payload.items() if key != "token"}
    upcast["sealed_token"] = payload.get("token")
    return upcast


@register
class PaymentRequested(_OrderEvent):
    """Stock is held and fraud approved: payment may charge the customer.

    v2: the provider token is sealed with the payment service's public key (only payment can open
    it); wallets (WeChat Pay, Alipay) need none, since the payer approves on the provider's page."""

    TYPE = "order.payment_requested"
    VERSION = 2
    UPCASTERS = MappingProxyType({1: _upcast_payment_requested_v1_v2})
    customer_id: str
    amount_fen: Fen
    currency: str = CURRENCY
    method: PaymentMethod
    sealed_token: str | None = Field(
        default=None,
        description="The provider token (bank card), sealed for the payment service; card data never "
        "enters the system. None for wallets.",
    )


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


@register
class RefundRequested(_OrderEvent):
    """Money goes back to the customer: all or part of what was captured (after-sales, a cancel).

    Payment refunds at most what was captured and remains; `refund_id` is the idempotency key, so
    one request refunds once however often it is delivered."""

    TYPE = "order.refund_requested"
    refund_id: str
    customer_id: str
    amount_fen: Fen = Field(gt=0)
    currency: str = CURRENCY
    reason: str = Field(min_length=1, max_length=200, description="Why, in words for the customer.")


class AfterSalesKind(StrEnum):
    REFUND_ONLY = "refund_only"
    RETURN_AND_REFUND = "return_and_refund"
    EXCHANGE = "exchange"


@register
class AfterSalesRequested(_OrderEvent):
    """A customer opened an after-sales case on a delivered order: a complaint against the merchant,
    which inventory counts towards the merchant's complaint rate."""

    TYPE = "order.after_sales_requested"
    case_id: str
    customer_id: str
    merchant_id: str
    kind: AfterSalesKind
    reason: str = Field(min_length=1, max_length=500)


@register
class OrderReviewed(_OrderEvent):
    """The buyer of a delivered order reviewed it, once: a verified purchase's rating, which inventory
    counts towards the merchant's and each product's rating."""

    TYPE = "order.reviewed"
    customer_id: str
    merchant_id: str
    skus: list[str] = Field(min_length=1)
    rating: int = Field(ge=1, le=5)

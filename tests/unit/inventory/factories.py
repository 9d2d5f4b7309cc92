"""Builders for the order events inventory consumes."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.contracts import (
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
    ShippingAddress,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ADDRESS = ShippingAddress(
    name="Li Lei",
    phone="+86 138 0000 0000",
    province="Zhejiang",
    city="Hangzhou",
    district="Xihu",
    line1="1 Longjing Road",
    postal_code="310000",
)


def line(sku: str, quantity: int, merchant_id: str = "m-1", price_fen: int = 1000) -> OrderLine:
    return OrderLine(sku=sku, name=sku, merchant_id=merchant_id, quantity=quantity, unit_price_fen=price_fen)


def placed(order_id: str, *lines: OrderLine) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        order_no=f"NO-{order_id}",
        customer_id="c-1",
        lines=list(lines),
        total_fen=sum(item.line_total_fen for item in lines),
        payment_method=PaymentMethod.ALIPAY,
        shipping_address=ADDRESS,
        placed_at=T0,
    )


def rejected(order_id: str, reason: str = "FRAUD_REJECTED") -> OrderRejected:
    return OrderRejected(order_id=order_id, order_no=f"NO-{order_id}", customer_id="c-1", reason=reason)


def cancelled(order_id: str, reason: str = "PAYMENT_FAILED") -> OrderCancelled:
    return OrderCancelled(order_id=order_id, order_no=f"NO-{order_id}", customer_id="c-1", reason=reason)


def confirmed(order_id: str, *lines: OrderLine) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        order_no=f"NO-{order_id}",
        customer_id="c-1",
        lines=list(lines),
        total_fen=sum(item.line_total_fen for item in lines),
        payment_id=f"pay-{order_id}",
    )

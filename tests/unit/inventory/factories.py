"""Builders for the order events inventory consumes."""

from __future__ import annotations

from datetime import datetime

from shared.contracts import (
    CouponApplied,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PaymentMethod,
)
from tests.unit.samples import ADDRESS, T0


def line(sku: str, quantity: int, merchant_id: str = "m-1", price_fen: int = 1000) -> OrderLine:
    return OrderLine(sku=sku, name=sku, merchant_id=merchant_id, quantity=quantity, unit_price_fen=price_fen)


def placed(order_id: str, *lines: OrderLine, hold_until: datetime | None = None) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        order_no=f"NO-{order_id}",
        customer_id="c-1",
        lines=list(lines),
        total_fen=sum(item.line_total_fen for item in lines),
        payment_method=PaymentMethod.ALIPAY,
        shipping_address=ADDRESS,
        placed_at=T0,
        hold_until=hold_until,
    )


def rejected(order_id: str, reason: OrderEndReason = OrderEndReason.FRAUD) -> OrderRejected:
    return OrderRejected(order_id=order_id, order_no=f"NO-{order_id}", customer_id="c-1", reason=reason)


def cancelled(order_id: str, reason: OrderEndReason = OrderEndReason.PAYMENT_DECLINED) -> OrderCancelled:
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


def placed_with_coupon(
    order_id: str, *lines: OrderLine, code: str, customer_id: str = "c-1", discount_fen: int = 0
) -> OrderPlaced:
    """An order placed with a coupon of its first line's merchant."""
    coupon = CouponApplied(code=code, merchant_id=lines[0].merchant_id, discount_fen=discount_fen)
    return placed(order_id, *lines).model_copy(update={"coupon": coupon, "customer_id": customer_id})

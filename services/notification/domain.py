"""Who is told what about an order, and the words they get: pure decisions, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from shared.contracts import (
    BackInStock,
    CodesAssigned,
    LowStock,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderRejected,
    PaymentRefunded,
    PaymentVoided,
    RefundReason,
    Role,
)

INBOX = "inbox"

# The channel each role is told through: the inbox, the only channel there is.
CHANNEL_BY_ROLE: dict[Role, str] = {Role.MERCHANT: INBOX, Role.CUSTOMER: INBOX}

MERCHANT_NEW_ORDER = "merchant.new_order"
CUSTOMER_ORDER_CONFIRMED = "customer.order_confirmed"
CUSTOMER_ORDER_REJECTED = "customer.order_rejected"
CUSTOMER_ORDER_CANCELLED = "customer.order_cancelled"
CUSTOMER_LATE_PAYMENT_RETURNED = "customer.late_payment_returned"
CUSTOMER_REFUND_COMPLETED = "customer.refund_completed"
CUSTOMER_CODES_DELIVERED = "customer.codes_delivered"
CUSTOMER_BACK_IN_STOCK = "customer.back_in_stock"
MERCHANT_LOW_STOCK = "merchant.low_stock"

# (subject, body) as str.format patterns over the fields each decision below supplies.
TEMPLATES: dict[str, tuple[str, str]] = {
    MERCHANT_NEW_ORDER: (
        "新订单 {order_no}",
        "您有一笔新订单 {order_no} 已付款，请尽快处理。商品：{items}。您的商品合计 {amount}。",
    ),
    CUSTOMER_ORDER_CONFIRMED: (
        "订单 {order_no} 已确认",
        "您的订单 {order_no} 已支付成功，实付 {amount}。商家正在为您准备商品。",
    ),
    CUSTOMER_ORDER_REJECTED: (
        "订单 {order_no} 未能受理",
        "很抱歉，您的订单 {order_no} 未能受理：{reason}。未产生任何扣款。",
    ),
    CUSTOMER_ORDER_CANCELLED: (
        "订单 {order_no} 已取消",
        "您的订单 {order_no} 已取消：{reason}。如有预授权款项将原路退回。",
    ),
    # Payment events carry no order number: the notification's order_id says which order it was.
    CUSTOMER_LATE_PAYMENT_RETURNED: (
        "订单结束后到账的 {amount} 已自动退还",
        "您有一笔 {amount} 的付款在订单结束后才到账{why}，订单不会因此恢复。{how}无需任何操作。",
    ),
    CUSTOMER_REFUND_COMPLETED: (
        "退款 {amount} 已完成",
        "您的退款 {amount} 已退回原支付账户{so_far}，到账时间以支付渠道为准。",
    ),
    # The codes travel beside the body, sealed (Notification.sealed_codes), never in its words.
    CUSTOMER_CODES_DELIVERED: (
        "您的 {count} 个兑换码已发放",
        "您购买的虚拟商品已发放 {count} 个兑换码，请在本通知或订单详情中查看，请勿告知他人。",
    ),
    # About a product, not an order: these notifications have no order_id.
    CUSTOMER_BACK_IN_STOCK: (
        "{name} 到货了",
        "您关注的商品 {name}（{sku}）已到货，现可购买 {available} 件。库存有限，先到先得。",
    ),
    MERCHANT_LOW_STOCK: (
        "{name} 库存告急",
        "您的商品 {name}（{sku}）可售库存仅剩 {available} 件，"
        "已不高于您设的预警值 {threshold} 件，请及时补货。",
    ),
}

# Why an order ended, in words a customer understands; a test keeps every code covered.
REASONS: dict[OrderEndReason, str] = {
    OrderEndReason.OUT_OF_STOCK: "商品库存不足",
    OrderEndReason.FRAUD: "未通过风险审核",
    OrderEndReason.PAYMENT_DECLINED: "支付未成功",
    OrderEndReason.STOCK_TIMEOUT: "库存确认超时",
    OrderEndReason.FRAUD_TIMEOUT: "风险审核超时",
    OrderEndReason.REVIEW_TIMEOUT: "人工审核超时",
    OrderEndReason.PAYMENT_TIMEOUT: "支付超时",
    OrderEndReason.CUSTOMER_CANCELLED: "您已取消订单",
    OrderEndReason.PROVIDER_TIMEOUT: "支付渠道未及时响应",
    OrderEndReason.RESERVATION_LOST: "付款到账时商品已售罄，货款将全额退回",
    OrderEndReason.COUPON_UNAVAILABLE: "优惠券已用完或您已使用过",
}

# How money that came too late went back: a held authorization is released, a taken payment refunded.
RELEASED = "这笔款项已释放，不会从您的账户扣除。"
REFUNDED = "这笔款项已原路退回您的支付账户，到账时间以支付渠道为准。"


class Status(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass
class Notification:
    """One message to one recipient about one order (or, with no order_id, about a product), from its
    decision to its delivery outcome."""

    notification_id: str
    order_id: str | None
    cause_id: str
    recipient: str
    role: Role
    channel: str
    template: str
    subject: str
    body: str
    at: datetime
    status: Status = Status.PENDING
    # Sends made: the handlers send once, so a stored notification shows 1.
    attempts: int = 0
    error: str | None = None
    # A virtual product's codes for the recipient, sealed as inventory assigned them: stored so, and
    # opened only for the recipient reading its notifications.
    sealed_codes: tuple[str, ...] = field(default=(), repr=False)

    def delivered(self, at: datetime) -> None:
        self.attempts += 1
        self.status = Status.SENT
        self.error = None
        self.at = at

    def failed(self, at: datetime, error: str) -> None:
        self.attempts += 1
        self.status = Status.FAILED
        self.error = error
        self.at = at


def notification_id(fact_id: str, recipient: str, template: str) -> str:
    """The same fact (the causing event's id, or a refund's or payment's own id), recipient and
    template always name the same notification, so a redelivery cannot create a second one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"notification/{fact_id}/{recipient}/{template}"))


def format_fen(fen: int, currency: str = "CNY") -> str:
    """Integer fen as a price a person reads: 1234 → ¥12.34."""
    symbol = "¥" if currency == "CNY" else f"{currency} "
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{symbol}{yuan:,}.{cents:02d}"


def render(template: str, **fields: str) -> tuple[str, str]:
    subject, body = TEMPLATES[template]
    return subject.format(**fields), body.format(**fields)


def reason_text(reason: OrderEndReason, detail: str = "") -> str:
    text = REASONS[reason]
    return f"{text}（{detail}）" if detail else text


def _notification(
    *,
    order_id: str | None,
    cause_id: str,
    recipient: str,
    role: Role,
    template: str,
    at: datetime,
    fact_id: str | None = None,
    **fields: str,
) -> Notification:
    subject, body = render(template, **fields)
    return Notification(
        notification_id=notification_id(fact_id or cause_id, recipient, template),
        order_id=order_id,
        cause_id=cause_id,
        recipient=recipient,
        role=role,
        channel=CHANNEL_BY_ROLE[role],
        template=template,
        subject=subject,
        body=body,
        at=at,
    )


def _lines_by_merchant(lines: list[OrderLine]) -> dict[str, list[OrderLine]]:
    by_merchant: dict[str, list[OrderLine]] = {}
    for line in lines:
        by_merchant.setdefault(line.merchant_id, []).append(line)
    return by_merchant


def order_confirmed(event: OrderConfirmed, *, cause_id: str, at: datetime) -> list[Notification]:
    """One notice to each merchant with lines in the order (about their lines only), one to the customer."""
    notifications = []
    for merchant_id, lines in _lines_by_merchant(event.lines).items():
        items = "；".join(
            f"{line.name} ×{line.quantity} {format_fen(line.line_total_fen, event.currency)}"
            for line in lines
        )
        subtotal = sum(line.line_total_fen for line in lines)
        notifications.append(
            _notification(
                order_id=event.order_id,
                cause_id=cause_id,
                recipient=merchant_id,
                role=Role.MERCHANT,
                template=MERCHANT_NEW_ORDER,
                at=at,
                order_no=event.order_no,
                items=items,
                amount=format_fen(subtotal, event.currency),
            )
        )
    notifications.append(
        _notification(
            order_id=event.order_id,
            cause_id=cause_id,
            recipient=event.customer_id,
            role=Role.CUSTOMER,
            template=CUSTOMER_ORDER_CONFIRMED,
            at=at,
            order_no=event.order_no,
            amount=format_fen(event.total_fen, event.currency),
        )
    )
    return notifications


def order_rejected(event: OrderRejected, *, cause_id: str, at: datetime) -> list[Notification]:
    """The customer learns the order was not accepted, and why."""
    return [_order_ended(event, CUSTOMER_ORDER_REJECTED, cause_id=cause_id, at=at)]


def order_cancelled(event: OrderCancelled, *, cause_id: str, at: datetime) -> list[Notification]:
    """The customer learns the order was cancelled after payment was requested, and why."""
    return [_order_ended(event, CUSTOMER_ORDER_CANCELLED, cause_id=cause_id, at=at)]


def _order_ended(
    event: OrderRejected | OrderCancelled, template: str, *, cause_id: str, at: datetime
) -> Notification:
    return _notification(
        order_id=event.order_id,
        cause_id=cause_id,
        recipient=event.customer_id,
        role=Role.CUSTOMER,
        template=template,
        at=at,
        order_no=event.order_no,
        reason=reason_text(event.reason, event.detail),
    )


def late_payment_voided(event: PaymentVoided, *, cause_id: str, at: datetime) -> list[Notification]:
    """The customer learns that a payment which arrived after their order ended was released.

    Only for a late void (an ordinary one follows a cancellation the customer was told of), and only
    when the event says whose payment it was: records from before v1.1 do not."""
    if not event.late or event.customer_id is None:
        return []
    return [
        _notification(
            order_id=event.order_id,
            cause_id=cause_id,
            # One payment is voided once, however many events announce it.
            fact_id=f"payment/{event.payment_id}/voided",
            recipient=event.customer_id,
            role=Role.CUSTOMER,
            template=CUSTOMER_LATE_PAYMENT_RETURNED,
            at=at,
            amount=format_fen(event.amount_fen, event.currency),
            why=f"（订单已结束：{reason_text(event.reason)}）",
            how=RELEASED,
        )
    ]


def payment_refunded(event: PaymentRefunded, *, cause_id: str, at: datetime) -> list[Notification]:
    """The customer learns their money went back: a late payment returned, or a refund completed."""
    amount = format_fen(event.amount_fen, event.currency)
    if event.reason is RefundReason.LATE_PAYMENT:
        template, fields = CUSTOMER_LATE_PAYMENT_RETURNED, {"why": "", "how": REFUNDED}
    else:
        whole_at_once = event.amount_fen == event.refunded_total_fen == event.captured_fen
        so_far = (
            ""
            if whole_at_once
            else f"（该笔付款 {format_fen(event.captured_fen, event.currency)}，"
            f"累计已退 {format_fen(event.refunded_total_fen, event.currency)}）"
        )
        template, fields = CUSTOMER_REFUND_COMPLETED, {"so_far": so_far}
    return [
        _notification(
            order_id=event.order_id,
            cause_id=cause_id,
            # The refund id is the refund's idempotency key: one refund, one notice.
            fact_id=f"refund/{event.refund_id}",
            recipient=event.customer_id,
            role=Role.CUSTOMER,
            template=template,
            at=at,
            amount=amount,
            **fields,
        )
    ]


def codes_delivered(event: CodesAssigned, *, cause_id: str, at: datetime) -> list[Notification]:
    """The buyer gets the codes of their paid order's virtual lines, sealed as they came."""
    sealed = tuple(code for line in event.lines for code in line.sealed_codes)
    notice = _notification(
        order_id=event.order_id,
        cause_id=cause_id,
        recipient=event.customer_id,
        role=Role.CUSTOMER,
        template=CUSTOMER_CODES_DELIVERED,
        at=at,
        count=str(len(sealed)),
    )
    return [replace(notice, sealed_codes=sealed)]


def back_in_stock(event: BackInStock, *, cause_id: str, at: datetime) -> list[Notification]:
    """Each customer the event names learns the product can be ordered again: one notice each."""
    return [
        _notification(
            order_id=None,
            cause_id=cause_id,
            recipient=customer_id,
            role=Role.CUSTOMER,
            template=CUSTOMER_BACK_IN_STOCK,
            at=at,
            name=event.name,
            sku=event.sku,
            available=str(event.available),
        )
        for customer_id in dict.fromkeys(event.customer_ids)
    ]


def low_stock(event: LowStock, *, cause_id: str, at: datetime) -> list[Notification]:
    """The merchant learns a product's sellable stock fell to or below the threshold it set."""
    return [
        _notification(
            order_id=None,
            cause_id=cause_id,
            recipient=event.merchant_id,
            role=Role.MERCHANT,
            template=MERCHANT_LOW_STOCK,
            at=at,
            name=event.name,
            sku=event.sku,
            available=str(event.available),
            threshold=str(event.threshold),
        )
    ]

"""The order saga as a pure state machine: facts in, new state and the events to emit out.

No I/O here: handlers load an Order, call one of its methods and store what it returns.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from shared.contracts import (
    CURRENCY,
    AssignedCodes,
    CouponApplied,
    CouponDiscount,
    DeclineReason,
    Event,
    FraudDecision,
    MerchantStatus,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    PayActionType,
    PaymentMethod,
    PaymentRequested,
    PriceTier,
    ProductKind,
    RefundReason,
    ServiceSlot,
    ShippingAddress,
)

MAX_LINES = 100
MAX_QUANTITY = 999


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    UNDER_REVIEW = "UNDER_REVIEW"
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    REFUND_REQUESTED = "REFUND_REQUESTED"
    REFUNDED = "REFUNDED"


# States in which the saga waits for another service and a deadline applies.
WAITING = frozenset({OrderStatus.PENDING, OrderStatus.UNDER_REVIEW, OrderStatus.AWAITING_PAYMENT})
# States before PaymentRequested is built: only in these does an order still need its provider token.
BEFORE_PAYMENT = frozenset({OrderStatus.PENDING, OrderStatus.UNDER_REVIEW})
# Methods that charge with a provider token the client sends; wallets need none, since the payer
# approves on the provider's page.
TOKEN_METHODS = frozenset({PaymentMethod.BANK_CARD})
# States in which the order ended without being fulfilled.
ENDED = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELLED})


class PaymentStatus(StrEnum):
    """Where the order's payment stands, as the customer sees it.

    NOT_REQUESTED until stock and fraud checks pass and payment is asked for (an order rejected
    before that stays NOT_REQUESTED). REQUESTED: asked, no answer yet. PENDING: the provider waits
    for the payer (WeChat Pay, Alipay: see the pay action). AUTHORIZED, then CAPTURED once the money
    is taken. FAILED: declined or no answer. VOIDED: an authorization released, nothing charged.
    REFUNDED: everything captured went back (a partial refund stays CAPTURED, with refunded_fen)."""

    NOT_REQUESTED = "not_requested"
    REQUESTED = "requested"
    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    FAILED = "failed"
    VOIDED = "voided"
    REFUNDED = "refunded"


# What the customer reads when a payment is declined, by the payment service's reason.
DECLINE_NOTES: Mapping[DeclineReason, str] = {
    DeclineReason.CARD_DECLINED: "Your card was declined",
    DeclineReason.INSUFFICIENT_FUNDS: "Your card has insufficient funds",
    DeclineReason.INVALID_TOKEN: "The payment details could not be used; please order again",
    DeclineReason.PROVIDER_DECLINED: "The payment provider declined the payment",
    DeclineReason.PROVIDER_ERROR: "The payment provider could not confirm the payment",
    DeclineReason.PROVIDER_TIMEOUT: "The payment provider did not answer in time",
    DeclineReason.PAYER_DECLINED: "You declined the payment",
    DeclineReason.AMOUNT_MISMATCH: "The amount paid did not match the order's",
}
# Whether anything may have been taken: an amount paid that did not match is given back.
_GIVEN_BACK = frozenset({DeclineReason.AMOUNT_MISMATCH})
_WALLETS = {PaymentMethod.WECHAT_PAY: "WeChat Pay", PaymentMethod.ALIPAY: "Alipay"}


def money(fen: int, currency: str = CURRENCY) -> str:
    """An amount as a customer reads it: ¥12.80 (integer arithmetic, never a float)."""
    amount = f"{fen // 100}.{fen % 100:02d}"
    return f"¥{amount}" if currency == CURRENCY else f"{amount} {currency}"


class Check(StrEnum):
    """Progress of one of the two parallel checks (stock, fraud) before payment."""

    PENDING = "pending"
    PASSED = "passed"
    REVIEW = "review"
    FAILED = "failed"


@dataclass(frozen=True)
class Deadlines:
    """How long the saga waits at each step before it compensates on its own."""

    checks: timedelta = timedelta(seconds=30)
    review: timedelta = timedelta(hours=1)
    payment: timedelta = timedelta(minutes=2)

    def hold_until(self, placed_at: datetime) -> datetime:
        """The latest an order placed at `placed_at` may still be approved and paid: every wait it
        can go through, back to back. Inventory holds its stock until then."""
        return placed_at + self.checks + self.review + self.payment


@dataclass(frozen=True)
class TimelineEntry:
    status: OrderStatus
    at: datetime
    cause: str
    note: str = ""  # written for the customer
    detail: str = ""  # internal: stock counts, risk score and rules; admin only


@dataclass(frozen=True)
class PayAction:
    """What the payer does to pay a wallet payment: scan `url` as a QR code, or follow it."""

    type: PayActionType
    url: str


@dataclass(frozen=True)
class CatalogItem:
    """The order service's replica of one product, kept from inventory's ProductUpserted."""

    sku: str
    name: str
    merchant_id: str
    kind: ProductKind
    price_fen: int
    active: bool = True
    max_per_order: int = MAX_QUANTITY
    # By rising min_quantity and falling price, as inventory checks them before announcing.
    price_tiers: tuple[PriceTier, ...] = ()
    description: str = ""
    category: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    # The methods it may be paid with; empty: whatever its merchant accepts.
    payment_methods: frozenset[PaymentMethod] = frozenset()

    def accepts(self, method: PaymentMethod) -> bool:
        """Whether the product itself may be paid with `method` (its merchant must accept it too)."""
        return not self.payment_methods or method in self.payment_methods

    # A service product's slots still to start when inventory last announced it.
    slots: tuple[ServiceSlot, ...] = ()

    def bookable_slots(self, now: datetime) -> list[ServiceSlot]:
        """The slots a line may book now: those that have not started."""
        return [slot for slot in self.slots if slot.starts_at > now]

    def unit_price_fen(self, quantity: int) -> int:
        """The price of each unit when one order holds `quantity` of this product: that of the
        highest tier the quantity reaches, or the list price below the first tier."""
        reached = [tier.unit_price_fen for tier in self.price_tiers if tier.min_quantity <= quantity]
        return reached[-1] if reached else self.price_fen


@dataclass(frozen=True)
class MerchantTerms:
    """The order service's replica of what a merchant accepts and whether it may sell, kept from
    MerchantUpserted."""

    merchant_id: str
    payment_methods: frozenset[PaymentMethod]
    status: MerchantStatus = MerchantStatus.APPROVED
    reason: str = ""

    def refusal(self) -> str | None:
        """Why its products cannot be ordered, or None while it is approved."""
        because = f": {self.reason}" if self.reason else ""
        if self.status is MerchantStatus.PENDING:
            return f"merchant {self.merchant_id} is not approved yet"
        if self.status is MerchantStatus.SUSPENDED:
            return f"merchant {self.merchant_id} is suspended{because}"
        if self.status is MerchantStatus.REJECTED:
            return f"merchant {self.merchant_id} was not approved{because}"
        return None


@dataclass(frozen=True)
class CouponTerms:
    """The order service's replica of one merchant's coupon, kept from inventory's CouponUpserted.
    How many uses it has left only inventory knows: it holds one with the order's stock."""

    code: str
    merchant_id: str
    discount: CouponDiscount
    value: int
    valid_from: datetime
    valid_until: datetime
    min_spend_fen: int = 0
    active: bool = True


class CouponRefused(ValueError):
    """The order cannot have the coupon; the message says why, for the shopper."""


def apply_coupon(
    code: str, coupon: CouponTerms | None, lines: Sequence[OrderLine], now: datetime
) -> CouponApplied:
    """The coupon's discount on the order: on its merchant's lines, as priced (quantity tiers
    included). PERCENT takes that many per cent off, rounded down to the fen; AMOUNT takes its value
    off, at most the lines' total. Raises CouponRefused naming why when the coupon is unknown,
    switched off, outside its validity window, for none of the order's merchants, or when that
    merchant's lines fall short of its minimum spend."""
    if coupon is None:
        raise CouponRefused(f"there is no coupon {code}")
    if not coupon.active:
        raise CouponRefused(f"coupon {code} is switched off")
    if now < coupon.valid_from:
        raise CouponRefused(f"coupon {code} is valid from {coupon.valid_from.isoformat()}")
    if now >= coupon.valid_until:
        raise CouponRefused(f"coupon {code} expired at {coupon.valid_until.isoformat()}")
    spent = sum(line.line_total_fen for line in lines if line.merchant_id == coupon.merchant_id)
    if not any(line.merchant_id == coupon.merchant_id for line in lines):
        raise CouponRefused(
            f"coupon {code} is for products of merchant {coupon.merchant_id}, and none are ordered"
        )
    if spent < coupon.min_spend_fen:
        raise CouponRefused(
            f"coupon {code} needs {money(coupon.min_spend_fen)} spent on merchant {coupon.merchant_id}'s "
            f"products; the order has {money(spent)}"
        )
    if coupon.discount is CouponDiscount.PERCENT:
        discount = spent * coupon.value // 100
    else:
        discount = min(coupon.value, spent)
    return CouponApplied(code=code, merchant_id=coupon.merchant_id, discount_fen=discount)


@dataclass(frozen=True)
class RequestedItem:
    sku: str
    quantity: int
    # The time slot it books, for a service product.
    slot_id: str | None = None


@dataclass(frozen=True)
class FieldIssue:
    """One thing wrong with an order request, named by its field so an app can highlight it."""

    field: str
    message: str


def review_items(
    items: Sequence[RequestedItem | None],
    catalog: Mapping[str, CatalogItem],
    merchants: Mapping[str, MerchantTerms],
    payment_method: PaymentMethod | None,
) -> list[FieldIssue]:
    """Everything wrong with the items and the payment method against the catalog, all at once.

    `items` keeps the request's positions (None where an item was malformed), so each issue names
    the right `items.N` field. A product of a merchant that is not approved is refused with the
    merchant's status and reason (its product may be delisted too: the reason says more). A
    merchant missing from the replica (it predates MerchantUpserted) accepts every method."""
    issues: list[FieldIssue] = []
    present = [item for item in items if item is not None]
    if len({item.sku for item in present}) > MAX_LINES:
        issues.append(FieldIssue("items", f"an order may have at most {MAX_LINES} distinct products"))
    totals: dict[str, int] = {}
    for each in present:
        totals[each.sku] = totals.get(each.sku, 0) + each.quantity
    refusing: set[str] = set()
    for index, item in enumerate(items):
        if item is None:
            continue
        product = catalog.get(item.sku)
        terms = None if product is None else merchants.get(product.merchant_id)
        refusal = None if terms is None else terms.refusal()
        if refusal is not None:
            issues.append(FieldIssue(f"items.{index}.sku", f"{item.sku} cannot be ordered: {refusal}"))
            continue
        if product is None or not product.active:
            issues.append(FieldIssue(f"items.{index}.sku", f"unknown or unavailable product {item.sku}"))
            continue
        if totals[item.sku] > product.max_per_order:
            issues.append(
                FieldIssue(
                    f"items.{index}.quantity",
                    f"at most {product.max_per_order} of {item.sku} per order (asked {totals[item.sku]})",
                )
            )
        if payment_method is not None and terms is not None and payment_method not in terms.payment_methods:
            refusing.add(product.merchant_id)
        elif payment_method is not None and not product.accepts(payment_method):
            accepted = ", ".join(m for m in PaymentMethod if m in product.payment_methods)
            issues.append(
                FieldIssue(
                    "payment.method",
                    f"{payment_method} is not accepted for {item.sku}: it may be paid with {accepted} only",
                )
            )
    if refusing and payment_method is not None:
        issues.append(
            FieldIssue(
                "payment.method",
                f"{payment_method} is not accepted by merchant(s) {', '.join(sorted(refusing))}",
            )
        )
    return issues


def review_slots(
    items: Sequence[RequestedItem | None], catalog: Mapping[str, CatalogItem], now: datetime
) -> list[FieldIssue]:
    """Each service item names one of its product's slots still to start, and no other item names
    one. Whether the slot has a seat left only inventory knows: a full one is rejected there."""
    issues: list[FieldIssue] = []
    for index, item in enumerate(items):
        product = None if item is None else catalog.get(item.sku)
        if item is None or product is None or not product.active:
            continue  # review_items names these
        field = f"items.{index}.slot_id"
        if product.kind is not ProductKind.SERVICE:
            if item.slot_id is not None:
                issues.append(FieldIssue(field, f"{item.sku} is a {product.kind} product: it has no slots"))
            continue
        bookable = {slot.slot_id for slot in product.bookable_slots(now)}
        if item.slot_id is None:
            issues.append(FieldIssue(field, f"{item.sku} is a service: name the slot to book (slot_id)"))
        elif item.slot_id not in bookable:
            issues.append(FieldIssue(field, f"{item.sku} has no slot {item.slot_id} open for booking"))
    return issues


def same_contact(given: str, recorded: str | None) -> bool:
    """Compares in constant time, so the answer's timing tells nothing about the recorded contact."""
    return recorded is not None and hmac.compare_digest(given.encode(), recorded.encode())


class OrderError(ValueError):
    """A request the domain refuses; the API maps it to a 4xx problem."""


class UnknownProducts(OrderError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"unknown or unavailable product(s): {', '.join(skus)}")
        self.skus = skus


class CannotCancel(OrderError):
    """The order is past the point where a customer may cancel it."""


def price_lines(items: Iterable[RequestedItem], catalog: Mapping[str, CatalogItem]) -> list[OrderLine]:
    """Price each requested item from the catalog replica; the same SKU twice is one line (one per
    slot, for a service), priced at the tier its whole quantity reaches."""
    quantities: dict[str, int] = {}
    slot_quantities: dict[tuple[str, str | None], int] = {}
    for item in items:
        quantities[item.sku] = quantities.get(item.sku, 0) + item.quantity
        key = (item.sku, item.slot_id)
        slot_quantities[key] = slot_quantities.get(key, 0) + item.quantity
    if not quantities:
        raise OrderError("an order needs at least one item")
    if len(quantities) > MAX_LINES:
        raise OrderError(f"an order may have at most {MAX_LINES} distinct products")
    unknown = sorted(sku for sku in quantities if sku not in catalog or not catalog[sku].active)
    if unknown:
        raise UnknownProducts(unknown)
    too_many = sorted(sku for sku, quantity in quantities.items() if quantity > MAX_QUANTITY)
    if too_many:
        raise OrderError(f"at most {MAX_QUANTITY} of one product per order: {', '.join(too_many)}")
    return [
        OrderLine(
            sku=sku,
            name=catalog[sku].name,
            merchant_id=catalog[sku].merchant_id,
            kind=catalog[sku].kind,
            quantity=quantity,
            unit_price_fen=catalog[sku].unit_price_fen(quantities[sku]),
            slot_id=slot_id,
        )
        for (sku, slot_id), quantity in slot_quantities.items()
    ]


@dataclass
class Order:
    order_id: str
    order_no: str
    customer_id: str
    lines: list[OrderLine]
    shipping_address: ShippingAddress
    payment_method: PaymentMethod
    # The provider token sealed for the payment service (never in clear), None for wallets; dropped
    # once PaymentRequested carries it, so it is not kept after use.
    payment_token: str | None
    placed_at: datetime
    deadline_at: datetime | None
    status: OrderStatus = OrderStatus.PENDING
    reason: OrderEndReason | None = None
    stock: Check = Check.PENDING
    fraud: Check = Check.PENDING
    fraud_score: int | None = None
    payment_id: str | None = None
    # The payment as the customer sees it: where it stands, what to do to pay, what went back.
    payment_status: PaymentStatus = PaymentStatus.NOT_REQUESTED
    pay_action: PayAction | None = None  # only while the payment is PENDING on an order that waits
    refunded_fen: int = 0
    currency: str = CURRENCY
    # The id the order's events carry end to end, so logs and traces join up across services.
    correlation_id: str = ""
    # A guest's contact ("email:li@example.com" or "phone:13800138000"), to find the order again.
    contact: str | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    # A virtual product's codes, by line, sealed as inventory assigned them: only the buyer sees them.
    codes: list[AssignedCodes] = field(default_factory=list)
    version: int = 0
    # The merchant's coupon the order was priced with, and its discount; inventory holds one of
    # its uses with the stock.
    coupon: CouponApplied | None = None
    # What inventory offered instead when the order was rejected out of stock: SKUs on sale now.
    substitutes: list[str] = field(default_factory=list)

    @property
    def lines_total_fen(self) -> int:
        return sum(line.line_total_fen for line in self.lines)

    @property
    def total_fen(self) -> int:
        """What the customer pays: the lines less the coupon's discount."""
        return self.lines_total_fen - (0 if self.coupon is None else self.coupon.discount_fen)

    @property
    def is_final(self) -> bool:
        return self.status not in WAITING

    @property
    def has_ended(self) -> bool:
        """Rejected or cancelled: a payment that comes now is the payment service's to give back."""
        return self.status in ENDED

    @property
    def merchant_ids(self) -> frozenset[str]:
        return frozenset(line.merchant_id for line in self.lines)

    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        order_no: str,
        customer_id: str,
        lines: list[OrderLine],
        shipping_address: ShippingAddress,
        payment_method: PaymentMethod,
        payment_token: str | None,
        now: datetime,
        deadlines: Deadlines,
        correlation_id: str,
        contact: str | None = None,
        coupon: CouponApplied | None = None,
    ) -> tuple[Order, list[Event]]:
        order = cls(
            order_id=order_id,
            order_no=order_no,
            customer_id=customer_id,
            lines=lines,
            shipping_address=shipping_address,
            payment_method=payment_method,
            payment_token=payment_token,
            placed_at=now,
            deadline_at=now + deadlines.checks,
            correlation_id=correlation_id,
            contact=contact,
            coupon=coupon,
        )
        order._record(now, "order.placed", "Order received; checking stock and payment safety.")
        placed = OrderPlaced(
            order_id=order_id,
            order_no=order_no,
            customer_id=customer_id,
            lines=lines,
            total_fen=order.total_fen,
            payment_method=payment_method,
            shipping_address=shipping_address,
            placed_at=now,
            hold_until=deadlines.hold_until(now),
            coupon=coupon,
        )
        return order, [placed]

    # --- facts from other services -------------------------------------------------------

    def stock_reserved(self, now: datetime, deadlines: Deadlines) -> list[Event]:
        if self.is_final or self.stock is not Check.PENDING:
            return []  # late or repeated: inventory releases on the order's own end event
        self.stock = Check.PASSED
        self._record(now, "inventory.stock_reserved", "Your items are set aside for you.")
        return self._advance(now, deadlines)

    def stock_rejected(
        self, now: datetime, skus: Sequence[str], detail: str, substitutes: Sequence[str] = ()
    ) -> list[Event]:
        if self.is_final or self.stock is not Check.PENDING:
            return []
        self.stock = Check.FAILED
        self.substitutes = list(substitutes)
        names = {line.sku: line.name for line in self.lines}
        short = ", ".join(names.get(sku, sku) for sku in skus) or "some items"
        return self._reject(
            now,
            OrderEndReason.OUT_OF_STOCK,
            "inventory.stock_rejected",
            detail,
            note=f"Sorry, not enough stock of {short}. Nothing was charged.",
        )

    def coupon_unavailable(self, now: datetime, detail: str) -> list[Event]:
        """The stock was there but no use of the coupon was left for this order (all used or held,
        or this customer used it already): the order is rejected, nothing held, nothing charged."""
        if self.is_final or self.stock is not Check.PENDING:
            return []
        self.stock = Check.FAILED
        code = "" if self.coupon is None else f" {self.coupon.code}"
        return self._reject(
            now,
            OrderEndReason.COUPON_UNAVAILABLE,
            "inventory.stock_rejected",
            detail,
            note=f"Sorry, the coupon{code} cannot be used for this order ({detail}). Nothing was charged; "
            "you may order again without it.",
        )

    def reservation_lost(self, now: datetime, skus: Sequence[str], detail: str) -> list[Event]:
        """Paid, but the reservation had run out and the stock was sold meanwhile: a confirmed order
        is cancelled, and payment gives the money back on OrderCancelled (voids an authorization,
        refunds a capture). Any other order ignores it."""
        if self.status is not OrderStatus.CONFIRMED:
            return []
        names = {line.sku: line.name for line in self.lines}
        short = ", ".join(names.get(sku, sku) for sku in skus) or "some items"
        return self._cancel(
            now,
            OrderEndReason.RESERVATION_LOST,
            "inventory.stock_rejected",
            detail,
            note=f"Sorry, {short} sold out while your payment was on its way; the order is cancelled "
            "and your payment is refunded in full.",
        )

    def fraud_scored(
        self, now: datetime, decision: FraudDecision, score: int, reasons: Sequence[str], deadlines: Deadlines
    ) -> list[Event]:
        if self.is_final or self.fraud not in (Check.PENDING, Check.REVIEW):
            return []
        self.fraud_score = score
        why = f"risk score {score}: {', '.join(reasons) or 'no risk signals'}"
        if decision is FraudDecision.REJECT:
            self.fraud = Check.FAILED
            return self._reject(
                now,
                OrderEndReason.FRAUD,
                "fraud.scored",
                why,
                note="Sorry, we cannot accept this order. Nothing was charged.",
            )
        if decision is FraudDecision.REVIEW:
            if self.fraud is Check.REVIEW:
                return []
            self.fraud = Check.REVIEW
            self.status = OrderStatus.UNDER_REVIEW
            self.deadline_at = now + deadlines.review
            self._record(
                now,
                "fraud.scored",
                "Your order is being reviewed; we will let you know shortly.",
                f"sent to manual review ({why})",
            )
            return []
        self.fraud = Check.PASSED
        self._record(now, "fraud.scored", "Order checks passed.", f"risk approved ({why})")
        return self._advance(now, deadlines)

    def payment_pending(
        self, now: datetime, payment_id: str, amount_fen: int, action: PayAction
    ) -> list[Event]:
        """The provider waits for the payer: the order shows them how to pay until an answer comes."""
        if self.status is not OrderStatus.AWAITING_PAYMENT or self.payment_status not in (
            PaymentStatus.REQUESTED,
            PaymentStatus.PENDING,
        ):
            return []  # too late: payment gives back whatever the payer still pays
        if self.payment_status is PaymentStatus.PENDING and self.pay_action == action:
            return []
        self.payment_id = payment_id
        self.payment_status = PaymentStatus.PENDING
        self.pay_action = action
        wallet = _WALLETS.get(self.payment_method, "the payment provider")
        amount = money(amount_fen, self.currency)
        note = (
            f"Scan the QR code with {wallet} to pay {amount}."
            if action.type is PayActionType.QR
            else f"Follow the link to pay {amount} with {wallet}."
        )
        self._record(
            now, "payment.pending", note, f"payment {payment_id} waits for the payer ({action.type})"
        )
        return []

    def payment_authorized(self, now: datetime, payment_id: str) -> list[Event]:
        if self.status is not OrderStatus.AWAITING_PAYMENT:
            return []  # a cancelled order's authorization is voided by payment on OrderCancelled
        self.payment_id = payment_id
        self.status = OrderStatus.CONFIRMED
        self.deadline_at = None
        self.pay_action = None
        if self.payment_status is not PaymentStatus.CAPTURED:
            self.payment_status = PaymentStatus.AUTHORIZED
        self._record(
            now, "payment.authorized", "Payment received; your order is confirmed.", f"payment {payment_id}"
        )
        return [
            OrderConfirmed(
                order_id=self.order_id,
                order_no=self.order_no,
                customer_id=self.customer_id,
                lines=self.lines,
                total_fen=self.total_fen,
                currency=self.currency,
                payment_id=payment_id,
            )
        ]

    def payment_failed(
        self, now: datetime, payment_id: str, reason: DeclineReason, detail: str = ""
    ) -> list[Event]:
        """The payment did not go through: a waiting order is cancelled (PROVIDER_TIMEOUT when the
        provider never answered, else PAYMENT_DECLINED). An order that ended meanwhile keeps its
        status; its payment view says the payment failed."""
        waiting = self.status is OrderStatus.AWAITING_PAYMENT
        unanswered = self.payment_status in (PaymentStatus.REQUESTED, PaymentStatus.PENDING)
        if not waiting and not (self.has_ended and unanswered):
            return []
        self.payment_id = payment_id
        self.payment_status = PaymentStatus.FAILED
        self.pay_action = None
        why = DECLINE_NOTES.get(reason, "The payment did not go through")
        charged = "anything paid is given back in full" if reason in _GIVEN_BACK else "nothing was charged"
        described = f"{reason}: {detail}" if detail else reason.value
        if not waiting:
            self._record(now, "payment.failed", f"{why}; {charged}.", described)
            return []
        ended_by = (
            OrderEndReason.PROVIDER_TIMEOUT
            if reason is DeclineReason.PROVIDER_TIMEOUT
            else OrderEndReason.PAYMENT_DECLINED
        )
        return self._cancel(
            now, ended_by, "payment.failed", described, note=f"{why}; the order is cancelled and {charged}."
        )

    def payment_captured(self, now: datetime, payment_id: str, amount_fen: int) -> list[Event]:
        """The authorized money was taken. On an order that ended, the refund that follows tells
        the customer; the capture alone would only alarm them."""
        takes = (PaymentStatus.REQUESTED, PaymentStatus.PENDING, PaymentStatus.AUTHORIZED)
        if self.has_ended or self.payment_status not in takes:
            return []
        self.payment_id = self.payment_id or payment_id
        self.payment_status = PaymentStatus.CAPTURED
        self.pay_action = None
        self._record(
            now,
            "payment.captured",
            f"{money(amount_fen, self.currency)} was charged.",
            f"payment {payment_id}",
        )
        return []

    def payment_voided(self, now: datetime, payment_id: str, amount_fen: int, *, late: bool) -> list[Event]:
        """An authorization was released (its order ended). The order's status does not change."""
        if self.payment_status is PaymentStatus.VOIDED:
            return []
        self.payment_id = self.payment_id or payment_id
        self.payment_status = PaymentStatus.VOIDED
        self.pay_action = None
        amount = money(amount_fen, self.currency)
        note = (
            f"A payment that arrived after your order was {self._ended_as} was released: {amount}. "
            "Nothing was charged."
            if late
            else f"The payment of {amount} was released. Nothing was charged."
        )
        self._record(now, "payment.voided", note, f"payment {payment_id} voided{' (late)' if late else ''}")
        return []

    def payment_refunded(
        self,
        now: datetime,
        payment_id: str,
        refund_id: str,
        amount_fen: int,
        *,
        refunded_total_fen: int,
        captured_fen: int,
        reason: RefundReason,
    ) -> list[Event]:
        """Money went back. The order's status does not change: a refund the order asked for
        (REQUESTED) and one payment made on its own (LATE_PAYMENT, ORDER_ENDED) only add to the
        payment view and the timeline."""
        if refunded_total_fen <= self.refunded_fen:
            return []  # repeated, or older than what the order already knows
        self.payment_id = self.payment_id or payment_id
        self.refunded_fen = refunded_total_fen
        in_full = refunded_total_fen >= captured_fen
        self.payment_status = PaymentStatus.REFUNDED if in_full else PaymentStatus.CAPTURED
        self.pay_action = None
        amount = money(amount_fen, self.currency)
        ended = self._ended_as
        if reason is RefundReason.LATE_PAYMENT:
            note = f"A payment that arrived after your order was {ended} was refunded in full: {amount}."
        elif reason is RefundReason.ORDER_ENDED:
            note = f"Your order was {ended} after the payment was taken; it was refunded in full: {amount}."
        elif in_full:
            note = f"{amount} was refunded to you; the payment is refunded in full."
        else:
            total = money(refunded_total_fen, self.currency)
            note = f"{amount} was refunded to you ({total} of {money(captured_fen, self.currency)} so far)."
        self._record(
            now,
            "payment.refunded",
            note,
            f"refund {refund_id} ({reason}): {amount_fen} fen, {refunded_total_fen} of {captured_fen} in all",
        )
        return []

    def codes_assigned(self, now: datetime, lines: Sequence[AssignedCodes]) -> list[Event]:
        """The order's virtual lines were given their codes (sealed): kept for the buyer to read.
        The status does not change; a line's codes arrive once, so a repeat adds nothing."""
        had = {line.sku for line in self.codes}
        new = [line for line in lines if line.sku not in had]
        if not new:
            return []
        self.codes.extend(new)
        count = sum(len(line.sealed_codes) for line in new)
        self._record(
            now,
            "inventory.codes_assigned",
            f"Your {count} code(s) are ready: they are shown on this order, to you only.",
            f"{count} code(s) for {', '.join(line.sku for line in new)}",
        )
        return []

    @property
    def delivered_codes(self) -> int:
        return sum(len(line.sealed_codes) for line in self.codes)

    @property
    def _ended_as(self) -> str:
        return "cancelled" if self.status is OrderStatus.CANCELLED else "closed"

    def cancel_by_customer(self, now: datetime) -> list[Event]:
        """The customer changed their mind before paying: held stock goes back, nothing is charged.

        Cancelling twice is no error; cancelling once paid or ended raises CannotCancel."""
        if self.status is OrderStatus.CANCELLED and self.reason is OrderEndReason.CUSTOMER_CANCELLED:
            return []
        if self.status is OrderStatus.CONFIRMED:
            raise CannotCancel(
                "the order is paid and confirmed; cancelling a paid order needs a refund, which "
                "this platform does not offer yet"
            )
        if self.is_final:
            raise CannotCancel(f"the order has already ended ({self.status}, {self.reason})")
        return self._cancel(
            now,
            OrderEndReason.CUSTOMER_CANCELLED,
            "customer.cancelled",
            "cancelled by the customer",
            note="You cancelled the order. Nothing was charged.",
        )

    def deadline_passed(self, now: datetime) -> list[Event]:
        """Drive an order whose next event is overdue to its compensating end."""
        if self.is_final or self.deadline_at is None or now < self.deadline_at:
            return []
        cause = "deadline"
        sorry = "Sorry, we could not complete your order in time. Nothing was charged."
        if self.status is OrderStatus.AWAITING_PAYMENT:
            return self._cancel(
                now,
                OrderEndReason.PAYMENT_TIMEOUT,
                cause,
                "no payment answer in time",
                note="No payment arrived in time; the order is cancelled.",
            )
        if self.status is OrderStatus.UNDER_REVIEW:
            return self._reject(
                now, OrderEndReason.REVIEW_TIMEOUT, cause, "no review decision in time", note=sorry
            )
        if self.stock is Check.PENDING:
            return self._reject(
                now, OrderEndReason.STOCK_TIMEOUT, cause, "no stock answer in time", note=sorry
            )
        return self._reject(now, OrderEndReason.FRAUD_TIMEOUT, cause, "no risk score in time", note=sorry)

    # --- transitions ---------------------------------------------------------------------

    def _advance(self, now: datetime, deadlines: Deadlines) -> list[Event]:
        if self.stock is not Check.PASSED or self.fraud is not Check.PASSED:
            return []
        self.status = OrderStatus.AWAITING_PAYMENT
        self.deadline_at = now + deadlines.payment
        self.payment_status = PaymentStatus.REQUESTED
        self._record(
            now,
            "order.payment_requested",
            "Waiting for your payment.",
            f"payment requested ({self.payment_method})",
        )
        requested = PaymentRequested(
            order_id=self.order_id,
            customer_id=self.customer_id,
            amount_fen=self.total_fen,
            currency=self.currency,
            method=self.payment_method,
            sealed_token=self.payment_token,
        )
        self.payment_token = None  # used: the event carries it, the order keeps no copy
        return [requested]

    def _reject(
        self, now: datetime, reason: OrderEndReason, cause: str, detail: str, *, note: str
    ) -> list[Event]:
        self._end(now, OrderStatus.REJECTED, reason, cause, note, detail)
        return [
            OrderRejected(
                order_id=self.order_id,
                order_no=self.order_no,
                customer_id=self.customer_id,
                reason=reason,
                detail=detail,
            )
        ]

    def _cancel(
        self, now: datetime, reason: OrderEndReason, cause: str, detail: str, *, note: str
    ) -> list[Event]:
        self._end(now, OrderStatus.CANCELLED, reason, cause, note, detail)
        return [
            OrderCancelled(
                order_id=self.order_id,
                order_no=self.order_no,
                customer_id=self.customer_id,
                reason=reason,
                detail=detail,
            )
        ]

    def _end(
        self,
        now: datetime,
        status: OrderStatus,
        reason: OrderEndReason,
        cause: str,
        note: str,
        detail: str,
    ) -> None:
        self.status = status
        self.reason = reason
        self.deadline_at = None
        self.pay_action = None  # nothing left to pay
        self._record(now, cause, note, f"{reason}: {detail}" if detail else reason)

    def _record(self, now: datetime, cause: str, note: str, detail: str = "") -> None:
        self.timeline.append(TimelineEntry(status=self.status, at=now, cause=cause, note=note, detail=detail))

"""Stock and reservations: a consumed batch decided against an in-memory view, with no I/O.

The `Ledger` holds the stock and reservations a batch touches as they were read. Each event moves
it forward in order, so two orders in one batch compete for the same units exactly as they would
one after the other. The store then writes what changed with conditional updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from shared.contracts import (
    CURRENCY,
    MAX_UNITS_PER_ORDER,
    CouponDiscount,
    CouponUpserted,
    Event,
    MerchantStatus,
    MerchantUpserted,
    OrderEndReason,
    OrderLine,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ProductUpserted,
    ReservationEndReason,
    Shortage,
    StockCommitted,
    StockLine,
    StockRejected,
    StockRejectReason,
    StockReleased,
    StockReserved,
)

MAX_SUBSTITUTES = 3
# The longest one order may lock stock unless the operator sets another bound: an order's own
# deadline (`hold_until`) may ask for more, but never more than this.
DEFAULT_MAX_HOLD = timedelta(hours=2)
# Sane bounds for money and stock: far above any real catalog, far below where int64 or a float
# on the way through JSON would lose a unit.
MAX_PRICE_FEN = 10**10
MAX_STOCK = 10**10
# Wholesale prices per product: a handful is all a price list needs; more is a mistake.
MAX_PRICE_TIERS = 10
EVERY_PAYMENT_METHOD = frozenset(PaymentMethod)


MAX_WEBHOOK_URL = 2048


class MerchantAction(StrEnum):
    """What moved a merchant to its status, as its history records it."""

    REGISTER = "register"  # a registration: PENDING until an admin decides
    CREATE_APPROVED = "create_approved"  # an admin created it without vetting details: approved at once
    APPROVE = "approve"
    REJECT = "reject"
    SUSPEND = "suspend"
    REINSTATE = "reinstate"


# action: (the statuses it may start from, the status it leads to)
TRANSITIONS: Mapping[MerchantAction, tuple[frozenset[MerchantStatus], MerchantStatus]] = {
    MerchantAction.APPROVE: (frozenset({MerchantStatus.PENDING}), MerchantStatus.APPROVED),
    MerchantAction.REJECT: (frozenset({MerchantStatus.PENDING}), MerchantStatus.REJECTED),
    MerchantAction.SUSPEND: (frozenset({MerchantStatus.APPROVED}), MerchantStatus.SUSPENDED),
    MerchantAction.REINSTATE: (frozenset({MerchantStatus.SUSPENDED}), MerchantStatus.APPROVED),
}
# A merchant told "no" is told why; approving needs no words.
NEEDS_REASON = frozenset({MerchantAction.REJECT, MerchantAction.SUSPEND})


class MerchantStatusConflict(ValueError):
    """The action does not apply to the merchant's current status; nothing changes."""

    def __init__(self, merchant_id: str, current: MerchantStatus, action: MerchantAction) -> None:
        allowed, _ = TRANSITIONS[action]
        from_statuses = " or ".join(sorted(allowed))
        super().__init__(
            f"merchant {merchant_id} is {current}: only a {from_statuses} merchant can be {_PAST[action]}"
        )
        self.current = current


class ReasonRequired(ValueError):
    """Rejecting or suspending a merchant needs a reason the merchant is told."""


class InvalidWebhookUrl(ValueError):
    """A webhook URL that is not an absolute https URL (http is allowed outside prod only)."""


_PAST = {
    MerchantAction.APPROVE: "approved",
    MerchantAction.REJECT: "rejected",
    MerchantAction.SUSPEND: "suspended",
    MerchantAction.REINSTATE: "reinstated",
}


def checked_webhook_url(url: str, *, allow_http: bool) -> str:
    """`url` if notifications may be sent to it; InvalidWebhookUrl says why not (without credentials
    in it: the URL travels on MerchantUpserted, so a password in it would be published)."""
    if len(url) > MAX_WEBHOOK_URL:
        raise InvalidWebhookUrl(f"a webhook URL has at most {MAX_WEBHOOK_URL} characters")
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidWebhookUrl(
            "a webhook URL must start with https://" + (" or http://" if allow_http else "")
        )
    if not parts.hostname:
        raise InvalidWebhookUrl("a webhook URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("a webhook URL must not carry a user name or password")
    return url


@dataclass(frozen=True)
class StatusChange:
    """One entry of a merchant's history: who moved it to `status`, when and why."""

    action: MerchantAction
    status: MerchantStatus
    at: datetime
    by: str
    reason: str = ""


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    payment_methods: frozenset[PaymentMethod] = EVERY_PAYMENT_METHOD
    # Merchants stored before vetting existed were all selling: they read as approved.
    status: MerchantStatus = MerchantStatus.APPROVED
    # Why it was rejected or suspended; empty while it is pending or approved.
    reason: str = ""
    webhook_url: str | None = None
    licence_number: str | None = None
    # Personal data: sealed at rest by the store, never published, never logged.
    contact: str | None = field(default=None, repr=False)
    history: tuple[StatusChange, ...] = ()

    @property
    def sells(self) -> bool:
        """Only an approved merchant's products can be ordered."""
        return self.status is MerchantStatus.APPROVED

    @property
    def accepted_methods(self) -> list[PaymentMethod]:
        """The methods it accepts, in a stable order (the order PaymentMethod lists them in)."""
        return [method for method in PaymentMethod if method in self.payment_methods]

    def same_registration(self, other: Merchant) -> bool:
        """Whether `other` registers exactly what this merchant was registered with."""
        return _registration(self) == _registration(other)

    def created(self, action: MerchantAction, by: str, at: datetime) -> Merchant:
        """This new merchant with the status its creation gives it, recorded in its history."""
        status = (
            MerchantStatus.APPROVED if action is MerchantAction.CREATE_APPROVED else MerchantStatus.PENDING
        )
        return replace(self, status=status, reason="", history=(StatusChange(action, status, at, by),))

    def moved(self, action: MerchantAction, by: str, at: datetime, reason: str = "") -> Merchant:
        """This merchant after an admin's decision, recorded in its history.

        Raises MerchantStatusConflict when the action does not apply to the current status and
        ReasonRequired when a rejection or suspension gives no reason."""
        allowed, status = TRANSITIONS[action]
        if self.status not in allowed:
            raise MerchantStatusConflict(self.merchant_id, self.status, action)
        reason = reason.strip()
        if action in NEEDS_REASON and not reason:
            raise ReasonRequired(f"say why merchant {self.merchant_id} is {_PAST[action]}: it is told")
        told = reason if status in (MerchantStatus.REJECTED, MerchantStatus.SUSPENDED) else ""
        entry = StatusChange(action, status, at, by, reason)
        return replace(self, status=status, reason=told, history=(*self.history, entry))

    def upserted(self) -> MerchantUpserted:
        return MerchantUpserted(
            merchant_id=self.merchant_id,
            name=self.name,
            payment_methods=self.accepted_methods,
            status=self.status,
            reason=self.reason,
            webhook_url=self.webhook_url,
        )


def _registration(merchant: Merchant) -> tuple[object, ...]:
    return (
        merchant.name,
        merchant.payment_methods,
        merchant.licence_number,
        merchant.contact,
        merchant.webhook_url,
    )


class StockOutOfRange(ValueError):
    """A stock change would take sellable units below zero or above MAX_STOCK; nothing changes."""


class InvalidPriceTiers(ValueError):
    """Quantity tiers that do not make a price list; `field` names the offending one
    (`price_tiers`, or `price_tiers.<index>.<min_quantity|unit_price_fen>`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_price_tiers(tiers: Sequence[PriceTier], *, price_fen: int, max_per_order: int) -> None:
    """Refuse tiers a shopper could not read as a price list: each tier starts at more units than
    the one before and is cheaper than it, every tier is cheaper than the list price, and every tier
    can be reached within the per-order limit. An ordered, falling list is what lets the highest tier
    a quantity reaches be its price."""
    if len(tiers) > MAX_PRICE_TIERS:
        raise InvalidPriceTiers(
            f"a product has at most {MAX_PRICE_TIERS} price tiers (got {len(tiers)})", "price_tiers"
        )
    previous: PriceTier | None = None
    for index, tier in enumerate(tiers):
        at = f"price_tiers.{index}"
        if tier.min_quantity > max_per_order:
            raise InvalidPriceTiers(
                f"tier {index} starts at {tier.min_quantity} units, beyond the limit of "
                f"{max_per_order} per order, so no order could reach it",
                f"{at}.min_quantity",
            )
        if tier.unit_price_fen >= price_fen:
            raise InvalidPriceTiers(
                f"tier {index} costs {tier.unit_price_fen} fen a unit: a tier must be cheaper than the "
                f"price of {price_fen} fen",
                f"{at}.unit_price_fen",
            )
        if previous is not None and tier.min_quantity <= previous.min_quantity:
            raise InvalidPriceTiers(
                f"tier {index} starts at {tier.min_quantity} units: tiers must start at strictly rising "
                f"quantities (the tier before starts at {previous.min_quantity})",
                f"{at}.min_quantity",
            )
        if previous is not None and tier.unit_price_fen >= previous.unit_price_fen:
            raise InvalidPriceTiers(
                f"tier {index} costs {tier.unit_price_fen} fen a unit: each tier must be cheaper than the "
                f"one before ({previous.unit_price_fen} fen)",
                f"{at}.unit_price_fen",
            )
        previous = tier


@dataclass(frozen=True)
class ProductDetails:
    """Everything about a product a catalog edit may change: all of it but its stock. Its price
    tiers are checked on construction, so details with a broken price list never exist."""

    name: str
    merchant_id: str
    price_fen: int
    kind: ProductKind = ProductKind.PHYSICAL
    active: bool = True
    max_per_order: int = MAX_UNITS_PER_ORDER
    price_tiers: tuple[PriceTier, ...] = ()

    def __post_init__(self) -> None:
        check_price_tiers(self.price_tiers, price_fen=self.price_fen, max_per_order=self.max_per_order)


@dataclass
class Product:
    sku: str
    name: str
    merchant_id: str
    price_fen: int
    available: int
    reserved: int = 0
    kind: ProductKind = ProductKind.PHYSICAL
    active: bool = True
    currency: str = CURRENCY
    max_per_order: int = MAX_UNITS_PER_ORDER
    # By rising min_quantity and falling price (ProductDetails checks it); empty: one price.
    price_tiers: tuple[PriceTier, ...] = ()

    @classmethod
    def create(cls, sku: str, details: ProductDetails, available: int) -> Product:
        """A new product with its first stock; nothing is reserved yet."""
        return cls(
            sku=sku,
            name=details.name,
            merchant_id=details.merchant_id,
            price_fen=details.price_fen,
            available=available,
            kind=details.kind,
            active=details.active,
            max_per_order=details.max_per_order,
            price_tiers=details.price_tiers,
        )

    def edited(self, details: ProductDetails) -> Product:
        """This product with new details and the very same stock: an edit never restocks, so a price
        change made from a stale read cannot undo the sales made since."""
        return replace(
            self,
            name=details.name,
            merchant_id=details.merchant_id,
            price_fen=details.price_fen,
            kind=details.kind,
            active=details.active,
            max_per_order=details.max_per_order,
            price_tiers=details.price_tiers,
        )

    def stock_change(self, add: int) -> StockDelta:
        """Restock (`add` > 0) or correct downwards (`add` < 0) the sellable units; what orders hold
        stays theirs, so a correction may take away at most what is available."""
        after = self.available + add
        if after < 0:
            raise StockOutOfRange(
                f"cannot take {-add} unit(s) away from {self.sku}: only {self.available} are sellable "
                f"({self.reserved} more are held by orders and stay theirs)"
            )
        if after > MAX_STOCK:
            raise StockOutOfRange(
                f"cannot add {add} unit(s) to {self.sku}: it would hold {after}, "
                f"above the limit of {MAX_STOCK}"
            )
        return StockDelta(available=add, reserved=0)

    def upserted(self, *, merchant_sells: bool) -> ProductUpserted:
        """The product as other services see it: listed (`active`) only while the merchant keeps it
        active and the merchant is approved, so a suspension delists it and a reinstatement relists
        exactly the products the merchant had not deactivated itself."""
        return ProductUpserted(
            sku=self.sku,
            name=self.name,
            merchant_id=self.merchant_id,
            kind=self.kind,
            price_fen=self.price_fen,
            currency=self.currency,
            active=self.active and merchant_sells,
            max_per_order=self.max_per_order,
            price_tiers=list(self.price_tiers),
        )


class ReservationStatus(StrEnum):
    HELD = "held"
    RELEASED = "released"
    COMMITTED = "committed"
    # Kept for a rejected order too, so a second OrderPlaced for it is recognised and not re-decided.
    REJECTED = "rejected"


@dataclass
class Reservation:
    order_id: str
    lines: list[StockLine]
    status: ReservationStatus
    correlation_id: str
    expires_at: datetime | None = None
    reason: str = ""
    # The code of the coupon whose use the order holds with its stock (see CouponBook), if any.
    coupon: str | None = None

    @property
    def expired(self) -> bool:
        """Released because it ran out, not because its order ended."""
        return self.status is ReservationStatus.RELEASED and self.reason == ReservationEndReason.EXPIRED


@dataclass(frozen=True)
class StockDelta:
    available: int
    reserved: int


@dataclass(frozen=True)
class Changes:
    """What a batch changed: stock increments and reservations, new, moved on from `held`, or moved
    on from released-because-expired (an order paid after its reservation ran out)."""

    stock: Mapping[str, StockDelta]
    created: Sequence[Reservation]
    moved_from_held: Sequence[Reservation]
    moved_from_expired: Sequence[Reservation] = ()
    coupons: CouponChanges = field(default_factory=lambda: CouponChanges())

    def __bool__(self) -> bool:
        return bool(
            self.stock or self.created or self.moved_from_held or self.moved_from_expired or self.coupons
        )


def hold_deadline(now: datetime, ttl: timedelta, hold_until: datetime | None, cap: timedelta) -> datetime:
    """Until when a reservation made at `now` holds its stock: as long as its order may still be
    approved and paid (`hold_until`), at least `ttl`, and never longer than `cap` from now."""
    wanted = now + ttl if hold_until is None else max(now + ttl, hold_until)
    return min(wanted, now + cap)


def stock_lines(lines: Iterable[OrderLine]) -> list[StockLine]:
    """One line per SKU (an order may list a SKU twice), in the order they first appear."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return [StockLine(sku=sku, quantity=quantity) for sku, quantity in totals.items()]


@dataclass
class Ledger:
    products: dict[str, Product]
    reservations: dict[str, Reservation]
    now: datetime
    ttl: timedelta
    # The longest a reservation holds stock, whatever its order's deadline asks for.
    max_hold: timedelta = DEFAULT_MAX_HOLD
    # The merchants of the products read; a product whose merchant is missing here or not approved
    # is not sold.
    merchants: Mapping[str, Merchant] = field(default_factory=dict)
    # Merchants with a short line, so the caller can load their other products as substitutes.
    short_merchants: set[str] = field(default_factory=set)
    _before: dict[str, StockDelta] = field(default_factory=dict)
    _created: dict[str, Reservation] = field(default_factory=dict)
    _moved: dict[str, Reservation] = field(default_factory=dict)
    _moved_from_expired: dict[str, Reservation] = field(default_factory=dict)
    # The coupons of the batch's orders and the uses they hold, decided along with the stock.
    coupons: CouponBook = field(default_factory=lambda: CouponBook())

    @classmethod
    def open(
        cls,
        products: Mapping[str, Product],
        reservations: Mapping[str, Reservation],
        *,
        now: datetime,
        ttl: timedelta,
        max_hold: timedelta = DEFAULT_MAX_HOLD,
        merchants: Mapping[str, Merchant] | None = None,
        coupons: CouponBook | None = None,
    ) -> Ledger:
        """A working copy: the caller's objects stay as they were read. Without `merchants` nothing
        can be reserved (releases, commits and re-reservations of paid orders need none); without
        `coupons` no order with a coupon can be, and the reservations read must hold no coupon use."""
        return cls(
            products={sku: replace(p) for sku, p in products.items()},
            reservations={oid: replace(r, lines=list(r.lines)) for oid, r in reservations.items()},
            now=now,
            ttl=ttl,
            max_hold=max_hold,
            merchants=dict(merchants or {}),
            _before={sku: StockDelta(p.available, p.reserved) for sku, p in products.items()},
            coupons=CouponBook() if coupons is None else coupons.copy(),
        )

    def reserve(
        self,
        order_id: str,
        lines: Sequence[OrderLine],
        correlation_id: str,
        hold_until: datetime | None = None,
        coupon: CouponClaim | None = None,
    ) -> list[Event]:
        """Hold every line or none, until `hold_deadline`, and one use of the order's coupon with
        them; an order already decided is not decided again. With the stock there but no use of the
        coupon for this customer, nothing is held: StockRejected(COUPON_UNAVAILABLE) says why."""
        if order_id in self.reservations:
            return []
        wanted = stock_lines(lines)
        shortages = [
            Shortage(sku=line.sku, quantity=line.quantity, available=self._sellable(line.sku))
            for line in wanted
            if self._sellable(line.sku) < line.quantity
        ]
        if shortages:
            merchants = {line.sku: line.merchant_id for line in lines}
            short_merchants = [self._merchant_of(s.sku, merchants[s.sku]) for s in shortages]
            self.short_merchants.update(short_merchants)
            self._add(Reservation(order_id, wanted, ReservationStatus.REJECTED, correlation_id))
            return [
                StockRejected(
                    order_id=order_id,
                    shortages=shortages,
                    substitutes=self._substitutes(short_merchants, exclude={line.sku for line in wanted}),
                )
            ]
        refusal = None if coupon is None else self.coupons.refusal(coupon, self.now)
        if refusal is not None:
            unavailable = StockRejectReason.COUPON_UNAVAILABLE
            self._add(
                Reservation(order_id, wanted, ReservationStatus.REJECTED, correlation_id, reason=unavailable)
            )
            return [StockRejected(order_id=order_id, reason=unavailable, detail=refusal)]
        if coupon is not None:
            self.coupons.hold(order_id, coupon)
        for line in wanted:
            product = self.products[line.sku]
            product.available -= line.quantity
            product.reserved += line.quantity
        expires_at = hold_deadline(self.now, self.ttl, hold_until, self.max_hold)
        code = None if coupon is None else coupon.code
        self._add(
            Reservation(order_id, wanted, ReservationStatus.HELD, correlation_id, expires_at, coupon=code)
        )
        return [StockReserved(order_id=order_id, lines=wanted, expires_at=expires_at)]

    def release(self, order_id: str, reason: OrderEndReason | ReservationEndReason) -> list[Event]:
        """Give held stock back; anything else (none held, already ended) is a no-op."""
        reservation = self._held(order_id)
        if reservation is None:
            return []
        for line in reservation.lines:
            product = self.products[line.sku]
            product.available += line.quantity
            product.reserved -= line.quantity
        self.coupons.release(order_id, reason)
        self._move(reservation, ReservationStatus.RELEASED, reason)
        return [StockReleased(order_id=order_id, lines=reservation.lines, reason=reason)]

    def commit(self, order_id: str) -> list[Event]:
        """The held stock leaves for good."""
        reservation = self._held(order_id)
        if reservation is None:
            return []
        for line in reservation.lines:
            self.products[line.sku].reserved -= line.quantity
        self.coupons.commit(order_id)
        self._move(reservation, ReservationStatus.COMMITTED, "")
        return [StockCommitted(order_id=order_id, lines=reservation.lines)]

    def confirm(self, order_id: str, lines: Sequence[OrderLine], correlation_id: str) -> list[Event]:
        """The order is paid: its stock leaves for good.

        A held reservation commits. One that expired before the payment came (or was never made)
        is taken again, every line or none, and committed at once; when the stock has gone
        meanwhile nothing is held and StockRejected(RESERVATION_LOST) names the shortages, so the
        order is cancelled and refunded rather than oversold. Either outcome is recorded on the
        reservation, so a repeated confirmation neither commits nor re-reserves twice."""
        reservation = self.reservations.get(order_id)
        if reservation is None:
            return self._take_again(order_id, lines, correlation_id, expired=None)
        if reservation.status is ReservationStatus.HELD:
            return self.commit(order_id)
        if reservation.expired:
            return self._take_again(order_id, lines, correlation_id, expired=reservation)
        # Committed or lost already, or released because the order itself ended: nothing to do.
        return []

    def expire(self) -> list[tuple[Reservation, Event]]:
        """Release every held reservation past its deadline, with the reservation it came from."""
        expired = [
            r
            for r in self.reservations.values()
            if r.status is ReservationStatus.HELD and r.expires_at is not None and r.expires_at <= self.now
        ]
        return [
            (r, event) for r in expired for event in self.release(r.order_id, ReservationEndReason.EXPIRED)
        ]

    def changes(self) -> Changes:
        stock = {}
        for sku, product in self.products.items():
            before = self._before.get(sku, StockDelta(0, 0))
            delta = StockDelta(product.available - before.available, product.reserved - before.reserved)
            if delta != StockDelta(0, 0):
                stock[sku] = delta
        return Changes(
            stock,
            list(self._created.values()),
            list(self._moved.values()),
            list(self._moved_from_expired.values()),
            self.coupons.changes(),
        )

    def _take_again(
        self,
        order_id: str,
        lines: Sequence[OrderLine],
        correlation_id: str,
        expired: Reservation | None,
    ) -> list[Event]:
        # The sale was agreed when the order was placed and held, as a held reservation commits
        # whatever became of its product or merchant since: only the units on hand count here.
        wanted = stock_lines(lines)
        shortages = [
            Shortage(sku=line.sku, quantity=line.quantity, available=self._on_hand(line.sku))
            for line in wanted
            if self._on_hand(line.sku) < line.quantity
        ]
        # A coupon use given back when the reservation expired is taken again too, as used.
        coupon_lost = None if shortages else self.coupons.retake_refusal(order_id)
        if shortages or coupon_lost is not None:
            status, reason = ReservationStatus.REJECTED, StockRejectReason.RESERVATION_LOST.value
            events: list[Event] = [
                StockRejected(
                    order_id=order_id,
                    reason=StockRejectReason.RESERVATION_LOST,
                    shortages=shortages,
                    detail=coupon_lost or "",
                )
            ]
        else:
            self.coupons.retake(order_id)
            for line in wanted:
                self.products[line.sku].available -= line.quantity
            status, reason = ReservationStatus.COMMITTED, ""
            events = [StockCommitted(order_id=order_id, lines=wanted)]
        if expired is None:
            self._add(Reservation(order_id, wanted, status, correlation_id, reason=reason))
        else:
            expired.lines, expired.status, expired.reason = wanted, status, reason
            self._moved_from_expired[order_id] = expired
        return events

    def _on_hand(self, sku: str) -> int:
        product = self.products.get(sku)
        return 0 if product is None else max(product.available, 0)

    def _sellable(self, sku: str) -> int:
        product = self.products.get(sku)
        if product is None or not product.active or not self._sells(product.merchant_id):
            return 0
        return max(product.available, 0)

    def _sells(self, merchant_id: str) -> bool:
        # A line of a merchant that is not approved is refused as a shortage of all it asks:
        # StockRejectReason has no value of its own for it yet.
        merchant = self.merchants.get(merchant_id)
        return merchant is not None and merchant.sells

    def _merchant_of(self, sku: str, ordered_from: str) -> str:
        product = self.products.get(sku)
        return product.merchant_id if product is not None else ordered_from

    def _substitutes(self, merchants: Sequence[str], exclude: set[str]) -> list[str]:
        picked: list[str] = []
        for merchant_id in dict.fromkeys(merchants):
            candidates = sorted(
                (
                    p
                    for p in self.products.values()
                    if p.merchant_id == merchant_id
                    and self._sells(merchant_id)
                    and p.active
                    and p.available > 0
                    and p.sku not in exclude
                    and p.sku not in picked
                ),
                key=lambda p: (-p.available, p.sku),
            )
            picked.extend(p.sku for p in candidates)
        return picked[:MAX_SUBSTITUTES]

    def _held(self, order_id: str) -> Reservation | None:
        reservation = self.reservations.get(order_id)
        if reservation is None or reservation.status is not ReservationStatus.HELD:
            return None
        return reservation

    def _add(self, reservation: Reservation) -> None:
        self.reservations[reservation.order_id] = reservation
        self._created[reservation.order_id] = reservation

    def _move(self, reservation: Reservation, status: ReservationStatus, reason: str) -> None:
        reservation.status = status
        reservation.reason = reason
        if reservation.order_id not in self._created:
            # Stored as `held`; the store moves it only if it still is.
            self._moved[reservation.order_id] = reservation


# --- coupons -----------------------------------------------------------------------------------
# A merchant's coupon takes money off its lines of an order (the gateway prices it from its replica)
# and may be used `total_uses` times in all. Inventory alone counts the uses: an order holds one with
# its stock, all or nothing, gives it back when it ends unpaid and uses it for good once paid. The
# counters always add up: left + held + used == total_uses.

COUPON_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_\-]{2,31}$"
MAX_COUPON_USES = 10**7


class InvalidCoupon(ValueError):
    """Coupon terms that do not make a coupon; `field` names the offending one."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class CouponUsesConflict(ValueError):
    """A coupon cannot allow fewer uses than orders have used or hold already; nothing changes."""


@dataclass(frozen=True)
class CouponTerms:
    """Everything about a coupon its merchant sets; checked on construction, so terms that make no
    coupon never exist."""

    merchant_id: str
    discount: CouponDiscount
    # PERCENT: per cent off (1-100); AMOUNT: fen off, at most the lines' total.
    value: int
    valid_from: datetime
    valid_until: datetime
    total_uses: int
    min_spend_fen: int = 0
    once_per_customer: bool = True
    active: bool = True

    def __post_init__(self) -> None:
        if self.discount is CouponDiscount.PERCENT and not 1 <= self.value <= 100:
            raise InvalidCoupon(f"a percent coupon takes 1 to 100 per cent off (got {self.value})", "value")
        if self.discount is CouponDiscount.AMOUNT and not 0 < self.value <= MAX_PRICE_FEN:
            raise InvalidCoupon(
                f"an amount coupon takes 1 to {MAX_PRICE_FEN} fen off (got {self.value})", "value"
            )
        if self.valid_until <= self.valid_from:
            raise InvalidCoupon(
                f"valid_until ({self.valid_until.isoformat()}) must be after valid_from "
                f"({self.valid_from.isoformat()})",
                "valid_until",
            )
        if not 1 <= self.total_uses <= MAX_COUPON_USES:
            raise InvalidCoupon(
                f"a coupon may be used 1 to {MAX_COUPON_USES} times (got {self.total_uses})", "total_uses"
            )
        if not 0 <= self.min_spend_fen <= MAX_PRICE_FEN:
            raise InvalidCoupon(f"min_spend_fen must be 0 to {MAX_PRICE_FEN}", "min_spend_fen")


@dataclass
class Coupon:
    code: str
    terms: CouponTerms
    # Uses still to be had, held by orders waiting to be paid, and used by paid orders.
    left: int
    held: int = 0
    used: int = 0

    @classmethod
    def create(cls, code: str, terms: CouponTerms) -> Coupon:
        return cls(code, terms, left=terms.total_uses)

    def edited(self, terms: CouponTerms) -> Coupon:
        """This coupon with new terms and the same uses held and used; CouponUsesConflict when its
        total would be below them."""
        taken = self.held + self.used
        if terms.total_uses < taken:
            raise CouponUsesConflict(
                f"coupon {self.code} cannot allow {terms.total_uses} use(s): {self.used} are used and "
                f"{self.held} held by orders waiting for payment"
            )
        return replace(self, terms=terms, left=terms.total_uses - taken)

    def refusal(self, merchant_id: str, now: datetime) -> str | None:
        """Why an order for `merchant_id`'s lines at `now` cannot use it, in words; None if it can."""
        terms = self.terms
        if terms.merchant_id != merchant_id:
            return f"coupon {self.code} is not a coupon of merchant {merchant_id}"
        if not terms.active:
            return f"coupon {self.code} is switched off"
        if now < terms.valid_from:
            return f"coupon {self.code} is valid from {terms.valid_from.isoformat()}"
        if now >= terms.valid_until:
            return f"coupon {self.code} expired at {terms.valid_until.isoformat()}"
        if self.left <= 0:
            return f"coupon {self.code} has no use left: all {terms.total_uses} are used or held by orders"
        return None

    def upserted(self) -> CouponUpserted:
        terms = self.terms
        return CouponUpserted(
            code=self.code,
            merchant_id=terms.merchant_id,
            discount=terms.discount,
            value=terms.value,
            min_spend_fen=terms.min_spend_fen,
            valid_from=terms.valid_from,
            valid_until=terms.valid_until,
            total_uses=terms.total_uses,
            once_per_customer=terms.once_per_customer,
            active=terms.active,
        )


@dataclass(frozen=True)
class CouponClaim:
    """An order's coupon as inventory checks it: which code, for which merchant's lines, by whom."""

    code: str
    merchant_id: str
    customer_id: str


class CouponUseStatus(StrEnum):
    HELD = "held"
    USED = "used"
    RELEASED = "released"


@dataclass
class CouponUse:
    """One order's use of a coupon, moved with the order's reservation."""

    order_id: str
    code: str
    # Personal data (a subject may be a phone number): sealed at rest, never logged.
    customer_id: str = field(repr=False)
    once_per_customer: bool
    status: CouponUseStatus
    reason: str = ""

    @property
    def redemption(self) -> tuple[str, str] | None:
        """(code, customer) while it keeps this customer from the coupon's other uses."""
        if self.once_per_customer and self.status in (CouponUseStatus.HELD, CouponUseStatus.USED):
            return self.code, self.customer_id
        return None


@dataclass(frozen=True)
class CouponDelta:
    left: int
    held: int
    used: int


@dataclass(frozen=True)
class CouponMove:
    use: CouponUse
    # The status it was read with: the store moves it only if it still has it.
    was: CouponUseStatus


@dataclass(frozen=True)
class CouponChanges:
    """What a batch changed of coupons: counter increments by code, new uses and uses moved on."""

    counts: Mapping[str, CouponDelta] = field(default_factory=dict)
    created: Sequence[CouponUse] = ()
    moved: Sequence[CouponMove] = ()

    def __bool__(self) -> bool:
        return bool(self.counts or self.created or self.moved)


@dataclass
class CouponBook:
    """The coupon part of a Ledger: the coupons a batch's orders name, the uses its orders hold, and
    which customers hold or used a once-per-customer coupon (among those the batch asks about)."""

    coupons: dict[str, Coupon] = field(default_factory=dict)
    uses: dict[str, CouponUse] = field(default_factory=dict)  # by order id
    redeemed: set[tuple[str, str]] = field(default_factory=set)  # (code, customer id)
    _before: dict[str, CouponDelta] = field(default_factory=dict)
    _created: dict[str, CouponUse] = field(default_factory=dict)
    _moved: dict[str, CouponMove] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        coupons: Mapping[str, Coupon],
        uses: Mapping[str, CouponUse],
        redeemed: Iterable[tuple[str, str]] = (),
    ) -> CouponBook:
        """A working copy: the caller's objects stay as they were read."""
        return cls(
            coupons={code: replace(c) for code, c in coupons.items()},
            uses={order_id: replace(u) for order_id, u in uses.items()},
            redeemed=set(redeemed),
            _before={code: CouponDelta(c.left, c.held, c.used) for code, c in coupons.items()},
        )

    def copy(self) -> CouponBook:
        return CouponBook.open(self.coupons, self.uses, self.redeemed)

    def refusal(self, claim: CouponClaim, now: datetime) -> str | None:
        """Why the order cannot hold a use of the coupon, in words; None if it can."""
        coupon = self.coupons.get(claim.code)
        if coupon is None:
            return f"there is no coupon {claim.code}"
        why = coupon.refusal(claim.merchant_id, now)
        if why is None and coupon.terms.once_per_customer and self._redeemed(claim.code, claim.customer_id):
            why = f"coupon {claim.code} is once per customer and this customer has used it already"
        return why

    def hold(self, order_id: str, claim: CouponClaim) -> None:
        """Hold one use for the order; the caller has found no refusal."""
        coupon = self.coupons[claim.code]
        coupon.left -= 1
        coupon.held += 1
        use = CouponUse(
            order_id, claim.code, claim.customer_id, coupon.terms.once_per_customer, CouponUseStatus.HELD
        )
        self.uses[order_id] = self._created[order_id] = use
        self._redeem(use)

    def release(self, order_id: str, reason: str) -> None:
        """Give the order's held use back: the coupon has it again, and so has the customer."""
        use = self.uses.get(order_id)
        if use is None or use.status is not CouponUseStatus.HELD:
            return
        coupon = self.coupons[use.code]
        coupon.held -= 1
        coupon.left += 1
        if use.redemption is not None:
            self.redeemed.discard(use.redemption)
        self._move(use, CouponUseStatus.RELEASED, reason)

    def commit(self, order_id: str) -> None:
        """The order is paid: its held use is used for good."""
        use = self.uses.get(order_id)
        if use is None or use.status is not CouponUseStatus.HELD:
            return
        coupon = self.coupons[use.code]
        coupon.held -= 1
        coupon.used += 1
        self._move(use, CouponUseStatus.USED, "")

    def retake_refusal(self, order_id: str) -> str | None:
        """Why the use the order gave back when its reservation expired cannot be taken again now
        that it is paid; None if it can (or it had none). Only the count and the customer's other
        uses matter: the sale was agreed when the order was placed."""
        use = self.uses.get(order_id)
        if use is None or use.status is not CouponUseStatus.RELEASED:
            return None
        coupon = self.coupons[use.code]
        if coupon.left <= 0:
            return f"coupon {use.code} had no use left once the order's reservation had expired"
        if use.once_per_customer and self._redeemed(use.code, use.customer_id):
            return f"coupon {use.code} was used by this customer again once the reservation had expired"
        return None

    def retake(self, order_id: str) -> None:
        """Take the given-back use again, straight as used; the caller has found no refusal."""
        use = self.uses.get(order_id)
        if use is None or use.status is not CouponUseStatus.RELEASED:
            return
        coupon = self.coupons[use.code]
        coupon.left -= 1
        coupon.used += 1
        self._move(use, CouponUseStatus.USED, "")
        self._redeem(use)

    def changes(self) -> CouponChanges:
        counts = {}
        for code, coupon in self.coupons.items():
            before = self._before.get(code, CouponDelta(0, 0, 0))
            delta = CouponDelta(
                coupon.left - before.left, coupon.held - before.held, coupon.used - before.used
            )
            if delta != CouponDelta(0, 0, 0):
                counts[code] = delta
        return CouponChanges(counts, list(self._created.values()), list(self._moved.values()))

    def _redeemed(self, code: str, customer_id: str) -> bool:
        return (code, customer_id) in self.redeemed

    def _redeem(self, use: CouponUse) -> None:
        if use.redemption is not None:
            self.redeemed.add(use.redemption)

    def _move(self, use: CouponUse, status: CouponUseStatus, reason: str) -> None:
        was = use.status
        use.status, use.reason = status, reason
        if use.order_id in self._created:
            return  # not stored yet: stored as it ends up
        if use.order_id not in self._moved:
            self._moved[use.order_id] = CouponMove(use, was)

"""Stock and reservations: a consumed batch decided against an in-memory view, with no I/O.

The `Ledger` holds the stock and reservations a batch touches as they were read. Each event moves
it forward in order, so two orders in one batch compete for the same units exactly as they would
one after the other. The store then writes what changed with conditional updates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from shared.contracts import (
    CURRENCY,
    MAX_UNITS_PER_ORDER,
    BackInStock,
    Event,
    LowStock,
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


# --- catalog details: description, category, attributes, payment methods, low-stock threshold ---

MAX_DESCRIPTION = 2000
MAX_CATEGORY = 100
MAX_CATEGORY_DEPTH = 5
MAX_ATTRIBUTES = 20
MAX_ATTRIBUTE_NAME = 40
MAX_ATTRIBUTE_VALUE = 200
# One level of a category path: lower-case letters, digits and inner dashes (`tea/green`).
_CATEGORY_LEVEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


class InvalidCatalogFields(ValueError):
    """A description, category, attributes or low-stock threshold a catalog cannot hold; `field` names
    the offending one (`category`, `attributes.<name>`...)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_catalog_fields(
    *, description: str, category: str, attributes: Mapping[str, str], low_stock_threshold: int | None
) -> None:
    """Refuse what a shopper could not browse by: a category is a slash path of lower-case levels
    (`tea/green`), attributes are a short list of short names and values."""
    if len(description) > MAX_DESCRIPTION:
        raise InvalidCatalogFields(
            f"a description has at most {MAX_DESCRIPTION} characters (got {len(description)})", "description"
        )
    if category:
        levels = category.split("/")
        if (
            len(category) > MAX_CATEGORY
            or len(levels) > MAX_CATEGORY_DEPTH
            or not all(_CATEGORY_LEVEL.fullmatch(level) for level in levels)
        ):
            raise InvalidCatalogFields(
                f"a category is a path of at most {MAX_CATEGORY_DEPTH} levels separated by '/', each of "
                f"lower-case letters, digits and dashes, {MAX_CATEGORY} characters in all (e.g. tea/green)",
                "category",
            )
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidCatalogFields(
            f"a product has at most {MAX_ATTRIBUTES} attributes (got {len(attributes)})", "attributes"
        )
    for name, value in attributes.items():
        if not name.strip() or len(name) > MAX_ATTRIBUTE_NAME:
            raise InvalidCatalogFields(
                f"an attribute name has 1 to {MAX_ATTRIBUTE_NAME} characters", f"attributes.{name[:40]}"
            )
        if not value.strip() or len(value) > MAX_ATTRIBUTE_VALUE:
            raise InvalidCatalogFields(
                f"attribute {name!r} needs a value of 1 to {MAX_ATTRIBUTE_VALUE} characters",
                f"attributes.{name}",
            )
    if low_stock_threshold is not None and not 0 <= low_stock_threshold <= MAX_STOCK:
        raise InvalidCatalogFields(
            f"a low-stock threshold is between 0 and {MAX_STOCK}", "low_stock_threshold"
        )


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
    description: str = ""
    category: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    # Empty: whatever the merchant accepts; otherwise some of the merchant's methods only.
    payment_methods: frozenset[PaymentMethod] = frozenset()
    # The merchant is told (LowStock) when sellable stock falls to or below it; None: never.
    low_stock_threshold: int | None = None

    def __post_init__(self) -> None:
        check_price_tiers(self.price_tiers, price_fen=self.price_fen, max_per_order=self.max_per_order)
        check_catalog_fields(
            description=self.description,
            category=self.category,
            attributes=self.attributes,
            low_stock_threshold=self.low_stock_threshold,
        )

    def methods_beyond(self, merchant: Merchant) -> list[PaymentMethod]:
        """The product's payment methods its merchant does not accept, in PaymentMethod order: a
        product may narrow its merchant's methods, never widen them."""
        return [m for m in PaymentMethod if m in self.payment_methods and m not in merchant.payment_methods]


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
    description: str = ""
    category: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    payment_methods: frozenset[PaymentMethod] = frozenset()
    low_stock_threshold: int | None = None
    # Whether the merchant has been told of the present dip to or below the threshold: set when
    # LowStock is announced, cleared when stock rises above the threshold again.
    low_stock_notified: bool = False

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
            description=details.description,
            category=details.category,
            attributes=dict(details.attributes),
            payment_methods=details.payment_methods,
            low_stock_threshold=details.low_stock_threshold,
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
            description=details.description,
            category=details.category,
            attributes=dict(details.attributes),
            payment_methods=details.payment_methods,
            low_stock_threshold=details.low_stock_threshold,
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
            description=self.description,
            category=self.category,
            attributes=dict(self.attributes),
            payment_methods=[m for m in PaymentMethod if m in self.payment_methods],
        )

    @property
    def is_low(self) -> bool:
        """At or below its low-stock threshold (never, without one)."""
        return self.low_stock_threshold is not None and self.available <= self.low_stock_threshold

    def low_stock(self) -> LowStock:
        return LowStock(
            sku=self.sku,
            name=self.name,
            merchant_id=self.merchant_id,
            available=max(self.available, 0),
            threshold=self.low_stock_threshold or 0,
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

    def __bool__(self) -> bool:
        return bool(self.stock or self.created or self.moved_from_held or self.moved_from_expired)


def hold_deadline(now: datetime, ttl: timedelta, hold_until: datetime | None, cap: timedelta) -> datetime:
    """Until when a reservation made at `now` holds its stock: as long as its order may still be
    approved and paid (`hold_until`), at least `ttl`, and never longer than `cap` from now."""
    wanted = now + ttl if hold_until is None else max(now + ttl, hold_until)
    return min(wanted, now + cap)


@dataclass(frozen=True)
class SubstituteSearch:
    """Where substitutes for a short product are looked for: the products of its category, whoever
    sells them, or, for a product without a category, its merchant's other products; those closest
    to its price first."""

    category: str
    merchant_id: str
    price_fen: int

    def matches(self, product: Product) -> bool:
        if self.category:
            return product.category == self.category
        return product.merchant_id == self.merchant_id


def rank_substitutes(searches: Sequence[SubstituteSearch], on_sale: Iterable[Product]) -> list[str]:
    """Up to MAX_SUBSTITUTES of the products `on_sale` that some search matches, closest in unit price
    to the short product they stand in for first; ties go to more stock, then to the sku."""
    ranked: dict[str, tuple[int, int, str]] = {}
    for product in on_sale:
        gaps = [abs(product.price_fen - search.price_fen) for search in searches if search.matches(product)]
        if gaps:
            ranked[product.sku] = (min(gaps), -product.available, product.sku)
    return sorted(ranked, key=ranked.__getitem__)[:MAX_SUBSTITUTES]


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
    # Where substitutes for the short lines are looked for, so the caller can load the candidates.
    wanted_substitutes: set[SubstituteSearch] = field(default_factory=set)
    _before: dict[str, StockDelta] = field(default_factory=dict)
    _created: dict[str, Reservation] = field(default_factory=dict)
    _moved: dict[str, Reservation] = field(default_factory=dict)
    _moved_from_expired: dict[str, Reservation] = field(default_factory=dict)

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
    ) -> Ledger:
        """A working copy: the caller's objects stay as they were read. Without `merchants` nothing
        can be reserved (releases, commits and re-reservations of paid orders need none)."""
        return cls(
            products={sku: replace(p) for sku, p in products.items()},
            reservations={oid: replace(r, lines=list(r.lines)) for oid, r in reservations.items()},
            now=now,
            ttl=ttl,
            max_hold=max_hold,
            merchants=dict(merchants or {}),
            _before={sku: StockDelta(p.available, p.reserved) for sku, p in products.items()},
        )

    def reserve(
        self,
        order_id: str,
        lines: Sequence[OrderLine],
        correlation_id: str,
        hold_until: datetime | None = None,
    ) -> list[Event]:
        """Hold every line or none, until `hold_deadline`; an order already decided is not decided
        again."""
        if order_id in self.reservations:
            return []
        wanted = stock_lines(lines)
        shortages = [
            Shortage(sku=line.sku, quantity=line.quantity, available=self._sellable(line.sku))
            for line in wanted
            if self._sellable(line.sku) < line.quantity
        ]
        if shortages:
            searches = self._substitute_searches(shortages, lines)
            self.wanted_substitutes.update(searches)
            self._add(Reservation(order_id, wanted, ReservationStatus.REJECTED, correlation_id))
            return [
                StockRejected(
                    order_id=order_id,
                    shortages=shortages,
                    substitutes=self._substitutes(searches, exclude={line.sku for line in wanted}),
                )
            ]
        for line in wanted:
            product = self.products[line.sku]
            product.available -= line.quantity
            product.reserved += line.quantity
        expires_at = hold_deadline(self.now, self.ttl, hold_until, self.max_hold)
        self._add(Reservation(order_id, wanted, ReservationStatus.HELD, correlation_id, expires_at))
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
        self._move(reservation, ReservationStatus.RELEASED, reason)
        return [StockReleased(order_id=order_id, lines=reservation.lines, reason=reason)]

    def commit(self, order_id: str) -> list[Event]:
        """The held stock leaves for good."""
        reservation = self._held(order_id)
        if reservation is None:
            return []
        for line in reservation.lines:
            self.products[line.sku].reserved -= line.quantity
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
        if shortages:
            status, reason = ReservationStatus.REJECTED, StockRejectReason.RESERVATION_LOST.value
            events: list[Event] = [
                StockRejected(
                    order_id=order_id, reason=StockRejectReason.RESERVATION_LOST, shortages=shortages
                )
            ]
        else:
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

    def _substitute_searches(
        self, shortages: Sequence[Shortage], lines: Sequence[OrderLine]
    ) -> list[SubstituteSearch]:
        ordered = {line.sku: line for line in lines}
        searches = []
        for shortage in shortages:
            product = self.products.get(shortage.sku)
            if product is None:  # unknown here: what the order says of it is all there is
                line = ordered[shortage.sku]
                searches.append(SubstituteSearch("", line.merchant_id, line.unit_price_fen))
            else:
                searches.append(SubstituteSearch(product.category, product.merchant_id, product.price_fen))
        return searches

    def _substitutes(self, searches: Sequence[SubstituteSearch], exclude: set[str]) -> list[str]:
        on_sale = [
            p
            for p in self.products.values()
            if p.sku not in exclude and p.active and p.available > 0 and self._sells(p.merchant_id)
        ]
        return rank_substitutes(searches, on_sale)

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


# --- what stock moves announce: back in stock, low stock ------------------------------------------

# Customers named by one BackInStock: a restock with more subscribers announces several events.
BACK_IN_STOCK_CHUNK = 500


@dataclass(frozen=True)
class Subscription:
    """A customer waiting to be told that an out-of-stock product is back; used up by the telling."""

    sku: str
    customer_id: str
    # New for every subscription, so a customer who subscribes again after being told is told again.
    subscription_id: str


def back_in_stock(
    product: Product, available_before: int, subscriptions: Sequence[Subscription]
) -> list[tuple[BackInStock, list[Subscription]]]:
    """The BackInStock events a stock change announces, each with the subscriptions it uses up: none
    unless the product went from nothing sellable to some, `BACK_IN_STOCK_CHUNK` customers a time."""
    if not subscriptions or available_before > 0 or product.available <= 0:
        return []
    chunks = [
        list(subscriptions[start : start + BACK_IN_STOCK_CHUNK])
        for start in range(0, len(subscriptions), BACK_IN_STOCK_CHUNK)
    ]
    return [
        (
            BackInStock(
                sku=product.sku,
                name=product.name,
                merchant_id=product.merchant_id,
                available=product.available,
                customer_ids=[s.customer_id for s in chunk],
            ),
            chunk,
        )
        for chunk in chunks
    ]


def low_stock_moves(products: Iterable[Product]) -> list[tuple[Product, LowStock | None]]:
    """The products whose low-stock flag must move, each with the LowStock to announce (None when the
    flag is cleared): once per dip to or below the threshold, again only after stock has risen
    above it. Their `low_stock_notified` is moved here, as it must be stored."""
    moves: list[tuple[Product, LowStock | None]] = []
    for product in products:
        if product.is_low == product.low_stock_notified:
            continue
        product.low_stock_notified = product.is_low
        moves.append((product, product.low_stock() if product.is_low else None))
    return moves

"""Stock and reservations: a consumed batch decided against an in-memory view, with no I/O.

The `Ledger` holds the stock and reservations a batch touches as they were read. Each event moves
it forward in order, so two orders in one batch compete for the same units exactly as they would
one after the other. The store then writes what changed with conditional updates.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

from shared.contracts import (
    CURRENCY,
    MAX_UNITS_PER_ORDER,
    BackInStock,
    CouponDiscount,
    CouponUpserted,
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
    ServiceSlot,
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

    def fields(self) -> dict[str, Any]:
        """Every detail by the name Product gives it, the attributes copied: what creating or editing
        a product sets, so a detail added here reaches both."""
        values = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return {**values, "attributes": dict(self.attributes)}

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
        return cls(sku=sku, available=available, **details.fields())

    def edited(self, details: ProductDetails) -> Product:
        """This product with new details and the very same stock: an edit never restocks, so a price
        change made from a stale read cannot undo the sales made since."""
        return replace(self, **details.fields())

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

    def upserted(self, *, merchant_sells: bool, slots: Iterable[Slot] = ()) -> ProductUpserted:
        """The product as other services see it: listed (`active`) only while the merchant keeps it
        active and the merchant is approved, so a suspension delists it and a reinstatement relists
        exactly the products the merchant had not deactivated itself. A service product carries
        `slots`, its upcoming ones (see `upcoming`), so the gateway can check the slot a line books."""
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
            slots=[slot.announced() for slot in slots],
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


# --- service slots: a bookable time slot's capacity is its stock ---------------------------------

# Seats per slot, slots per product and how far ahead and how long: far above a real timetable,
# and bounds that keep a product's announcement (every upcoming slot rides on it) small.
MAX_SLOT_CAPACITY = 10_000
MAX_UPCOMING_SLOTS = 200
SLOT_HORIZON = timedelta(days=366)
MAX_SLOT_LENGTH = timedelta(days=7)

# A slot is named by its product's sku and its own id, unique within that product.
SlotKey = tuple[str, str]


class NotAService(ValueError):
    """Slots were asked of a product that is not a `service`; nothing changes."""


class InvalidSlot(ValueError):
    """Times or a capacity no slot can have; `field` names the offending one (`starts_at`, `ends_at`,
    `capacity`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class SlotConflict(ValueError):
    """A slot change its bookings (or its having started) forbid; nothing changes."""


@dataclass(frozen=True)
class SlotPlan:
    """What a merchant offers: a slot's times and how many bookings it takes."""

    slot_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int

    def check(self, now: datetime) -> None:
        """Refuse a slot nobody could book: ending before it starts, already started, too far
        ahead, too long, or a capacity out of range."""
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise InvalidSlot("a slot's times need a time zone (e.g. 2026-12-01T09:00:00+08:00)", "starts_at")
        if self.ends_at <= self.starts_at:
            raise InvalidSlot(
                f"slot {self.slot_id} ends at {self.ends_at.isoformat()}, not after it starts at "
                f"{self.starts_at.isoformat()}",
                "ends_at",
            )
        if self.starts_at <= now:
            raise InvalidSlot(
                f"slot {self.slot_id} starts at {self.starts_at.isoformat()}, in the past: a slot "
                "must start in the future",
                "starts_at",
            )
        if self.starts_at > now + SLOT_HORIZON:
            raise InvalidSlot(
                f"slot {self.slot_id} starts more than {SLOT_HORIZON.days} days ahead", "starts_at"
            )
        if self.ends_at - self.starts_at > MAX_SLOT_LENGTH:
            raise InvalidSlot(f"a slot lasts at most {MAX_SLOT_LENGTH.days} days", "ends_at")
        if not 0 <= self.capacity <= MAX_SLOT_CAPACITY:
            raise InvalidSlot(f"a slot's capacity is 0 to {MAX_SLOT_CAPACITY}", "capacity")


@dataclass
class Slot:
    """A bookable time slot of a service product. Its seats are its stock: `available` to book,
    `reserved` by orders not paid yet, and the rest of `capacity` booked by paid orders."""

    sku: str
    slot_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    available: int
    reserved: int = 0

    @classmethod
    def offered(cls, sku: str, plan: SlotPlan, now: datetime) -> Slot:
        """A new slot with every seat free; InvalidSlot when it could not be booked."""
        plan.check(now)
        return cls(sku, plan.slot_id, plan.starts_at, plan.ends_at, plan.capacity, available=plan.capacity)

    @property
    def key(self) -> SlotKey:
        return (self.sku, self.slot_id)

    @property
    def taken(self) -> int:
        """Seats held by unpaid orders or booked by paid ones."""
        return self.capacity - self.available

    def upcoming(self, now: datetime) -> bool:
        """Whether it can still be booked: a slot that has started cannot."""
        return self.starts_at > now

    def replanned(self, plan: SlotPlan, now: datetime) -> Slot:
        """This slot with new times and capacity; the seats taken stay taken.

        Raises InvalidSlot for times or a capacity no slot can have, and SlotConflict when the slot
        has started, when it would move while seats are taken (its bookings were made for its
        times), or when the capacity would go below the seats taken."""
        if not self.upcoming(now):
            raise SlotConflict(f"slot {self.slot_id} of {self.sku} has started: it can no longer change")
        plan.check(now)
        moved = (plan.starts_at, plan.ends_at) != (self.starts_at, self.ends_at)
        if moved and self.taken:
            raise SlotConflict(
                f"slot {self.slot_id} of {self.sku} has {self.taken} seat(s) taken: its times cannot "
                "move; offer another slot instead"
            )
        if plan.capacity < self.taken:
            raise SlotConflict(
                f"slot {self.slot_id} of {self.sku} has {self.taken} seat(s) taken ({self.reserved} held "
                f"by orders not paid yet): its capacity cannot go below {self.taken}"
            )
        return replace(
            self,
            starts_at=plan.starts_at,
            ends_at=plan.ends_at,
            capacity=plan.capacity,
            available=self.available + plan.capacity - self.capacity,
        )

    def check_removable(self) -> None:
        """Only a slot nobody booked may go; one with bookings is closed with a capacity equal to
        its seats taken instead, so the bookings are kept. SlotConflict says so."""
        if self.taken:
            raise SlotConflict(
                f"slot {self.slot_id} of {self.sku} has {self.taken} seat(s) taken and cannot be "
                f"removed; set its capacity to {self.taken} to close it to new bookings"
            )

    def announced(self) -> ServiceSlot:
        return ServiceSlot(slot_id=self.slot_id, starts_at=self.starts_at, ends_at=self.ends_at)


def upcoming(slots: Iterable[Slot], now: datetime) -> list[Slot]:
    """The slots that can still be booked, earliest first."""
    return sorted((s for s in slots if s.upcoming(now)), key=lambda s: (s.starts_at, s.slot_id))


def check_room_for_a_slot(slots: Iterable[Slot], now: datetime) -> None:
    """A product offers at most MAX_UPCOMING_SLOTS slots ahead: every one rides on its announcement."""
    if len(upcoming(slots, now)) >= MAX_UPCOMING_SLOTS:
        raise SlotConflict(f"a product offers at most {MAX_UPCOMING_SLOTS} upcoming slots")


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
    # The seats of service products' slots, as `stock` is the units of other products.
    slots: Mapping[SlotKey, StockDelta] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.stock
            or self.created
            or self.moved_from_held
            or self.moved_from_expired
            or self.slots
            or self.coupons
        )


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
    """One line per SKU and slot (an order may list a SKU twice, or book two slots of one service),
    in the order they first appear."""
    totals: dict[tuple[str, str | None], int] = {}
    for line in lines:
        key = (line.sku, line.slot_id)
        totals[key] = totals.get(key, 0) + line.quantity
    return [
        StockLine(sku=sku, quantity=quantity, slot_id=slot_id) for (sku, slot_id), quantity in totals.items()
    ]


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
    # The slots the batch's service lines book; a line's slot missing here is not bookable.
    slots: dict[SlotKey, Slot] = field(default_factory=dict)
    _before: dict[str, StockDelta] = field(default_factory=dict)
    _slots_before: dict[SlotKey, StockDelta] = field(default_factory=dict)
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
        slots: Mapping[SlotKey, Slot] | None = None,
    ) -> Ledger:
        """A working copy: the caller's objects stay as they were read. Without `merchants` nothing
        can be reserved (releases, commits and re-reservations of paid orders need none); without
        the `slots` its service lines name, nothing of a service product can; without `coupons` no
        order with a coupon can be, and the reservations read must hold no coupon use."""
        slots = slots or {}
        return cls(
            products={sku: replace(p) for sku, p in products.items()},
            reservations={oid: replace(r, lines=list(r.lines)) for oid, r in reservations.items()},
            now=now,
            ttl=ttl,
            max_hold=max_hold,
            merchants=dict(merchants or {}),
            slots={key: replace(slot) for key, slot in slots.items()},
            _before={sku: StockDelta(p.available, p.reserved) for sku, p in products.items()},
            coupons=CouponBook() if coupons is None else coupons.copy(),
            _slots_before={key: StockDelta(s.available, s.reserved) for key, s in slots.items()},
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
            Shortage(
                sku=line.sku,
                slot_id=line.slot_id,
                quantity=line.quantity,
                available=self._sellable_for(line),
            )
            for line in wanted
            if self._sellable_for(line) < line.quantity
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
            stock = self._stock_of(line)
            stock.available -= line.quantity
            stock.reserved += line.quantity
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
            stock = self._stock_of(line)
            stock.available += line.quantity
            stock.reserved -= line.quantity
        self.coupons.release(order_id, reason)
        self._move(reservation, ReservationStatus.RELEASED, reason)
        return [StockReleased(order_id=order_id, lines=reservation.lines, reason=reason)]

    def commit(self, order_id: str) -> list[Event]:
        """The held stock leaves for good."""
        reservation = self._held(order_id)
        if reservation is None:
            return []
        for line in reservation.lines:
            self._stock_of(line).reserved -= line.quantity
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
            slots=self._slot_changes(),
            coupons=self.coupons.changes(),
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
            Shortage(
                sku=line.sku, slot_id=line.slot_id, quantity=line.quantity, available=self._on_hand_for(line)
            )
            for line in wanted
            if self._on_hand_for(line) < line.quantity
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
                self._stock_of(line).available -= line.quantity
            status, reason = ReservationStatus.COMMITTED, ""
            events = [StockCommitted(order_id=order_id, lines=wanted)]
        if expired is None:
            self._add(Reservation(order_id, wanted, status, correlation_id, reason=reason))
        else:
            expired.lines, expired.status, expired.reason = wanted, status, reason
            self._moved_from_expired[order_id] = expired
        return events

    # --- service slots: a line naming a slot takes that slot's seats instead of product units -----

    def _slot_of(self, line: StockLine) -> Slot | None:
        # Only a service product's lines book slots: a slot id on another kind's line matches none.
        product = self.products.get(line.sku)
        if line.slot_id is None or product is None or product.kind is not ProductKind.SERVICE:
            return None
        return self.slots.get((line.sku, line.slot_id))

    def _books_a_slot(self, line: StockLine) -> bool:
        product = self.products.get(line.sku)
        return line.slot_id is not None or (product is not None and product.kind is ProductKind.SERVICE)

    def _stock_of(self, line: StockLine) -> Product | Slot:
        """Where the line's units are counted: its slot for a service, its product otherwise."""
        if line.slot_id is None:
            return self.products[line.sku]
        return self.slots[(line.sku, line.slot_id)]

    def _sellable_for(self, line: StockLine) -> int:
        """What a new order may take for `line`: a service line, seats of an upcoming slot of a listed
        product of a merchant that sells; an unknown or started slot, or none named, has none."""
        if not self._books_a_slot(line):
            return self._sellable(line.sku)
        slot = self._slot_of(line)
        if slot is None or not slot.upcoming(self.now) or self._sellable_product(line.sku) is None:
            return 0
        return max(slot.available, 0)

    def _on_hand_for(self, line: StockLine) -> int:
        """What a paid order may take again: the units on hand, or an upcoming slot's free seats (a
        slot that has started is no use to the buyer, who is refunded instead)."""
        if not self._books_a_slot(line):
            return self._on_hand(line.sku)
        slot = self._slot_of(line)
        return 0 if slot is None or not slot.upcoming(self.now) else max(slot.available, 0)

    def _sellable_product(self, sku: str) -> Product | None:
        product = self.products.get(sku)
        if product is None or not product.active or not self._sells(product.merchant_id):
            return None
        return product

    def _slot_changes(self) -> dict[SlotKey, StockDelta]:
        changed = {}
        for key, slot in self.slots.items():
            before = self._slots_before.get(key, StockDelta(0, 0))
            delta = StockDelta(slot.available - before.available, slot.reserved - before.reserved)
            if delta != StockDelta(0, 0):
                changed[key] = delta
        return changed

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


# --- virtual goods: code pools -------------------------------------------------------------------

# A code pool grows in uploads of at most this many codes: a file a merchant pastes, not a dump of
# millions that would hold one transaction open for minutes.
MAX_CODES_PER_UPLOAD = 1000
# Gift cards, licence keys and top-up codes fit well within this; longer is pasted by mistake.
MAX_CODE_LENGTH = 200


class InvalidCodes(ValueError):
    """An upload of codes that cannot be added as it is; nothing is added. `lines` names the
    offending lines of the upload (1-based), never the codes themselves: they are secrets."""

    def __init__(self, message: str, lines: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


class DuplicateCodes(InvalidCodes):
    """Codes given twice in one upload, or already in the product's pool."""


class NotVirtual(ValueError):
    """Codes were uploaded for a product that is not virtual, or stock added to one that is: a
    virtual product's stock is its pool of codes."""


@dataclass(frozen=True)
class UploadedCode:
    line: int  # where it stood in the upload, 1-based, for the errors that name it
    code: str = field(repr=False)


def _lines_named(lines: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def parse_codes(text: str) -> list[UploadedCode]:
    """One code per line, whitespace around it trimmed, blank lines skipped.

    Raises InvalidCodes when there are none, more than MAX_CODES_PER_UPLOAD, or a code is longer
    than MAX_CODE_LENGTH or holds control characters; DuplicateCodes naming the lines that repeat a
    code given earlier in the upload."""
    codes = [
        UploadedCode(number, stripped)
        for number, line in enumerate(text.splitlines(), start=1)
        if (stripped := line.strip())
    ]
    if not codes:
        raise InvalidCodes("no codes given: send one code per line")
    if len(codes) > MAX_CODES_PER_UPLOAD:
        raise InvalidCodes(
            f"{len(codes)} codes in one upload; at most {MAX_CODES_PER_UPLOAD}: split it into several"
        )
    too_long = [c.line for c in codes if len(c.code) > MAX_CODE_LENGTH]
    if too_long:
        raise InvalidCodes(
            f"a code has at most {MAX_CODE_LENGTH} characters; line(s) {_lines_named(too_long)} are longer",
            too_long,
        )
    unprintable = [c.line for c in codes if not c.code.isprintable()]
    if unprintable:
        raise InvalidCodes(
            f"line(s) {_lines_named(unprintable)} hold control characters, which no code has", unprintable
        )
    seen: set[str] = set()
    repeated = []
    for code in codes:
        if code.code in seen:
            repeated.append(code.line)
        seen.add(code.code)
    if repeated:
        raise DuplicateCodes(
            f"line(s) {_lines_named(repeated)} repeat a code given earlier in this upload; nothing was added",
            repeated,
        )
    return codes


def already_pooled(codes: Sequence[UploadedCode], pooled: Collection[str]) -> None:
    """Raises DuplicateCodes naming the lines whose code is in the product's pool already (`pooled`:
    the codes of the upload the store found there)."""
    lines = [c.line for c in codes if c.code in pooled]
    if lines:
        raise DuplicateCodes(
            f"{len(lines)} code(s) are in this product's pool already, on line(s) {_lines_named(lines)}; "
            "nothing was added",
            lines,
        )


def committed_virtual_lines(changes: Changes, products: Mapping[str, Product]) -> dict[str, list[StockLine]]:
    """The lines of virtual products in the reservations this batch committed, by order: each unit
    of them is one code to assign. A confirmation repeated, or of an order already settled, commits
    nothing and so asks for no codes."""
    committed = [
        r
        for r in (*changes.created, *changes.moved_from_held, *changes.moved_from_expired)
        if r.status is ReservationStatus.COMMITTED
    ]
    wanted: dict[str, list[StockLine]] = {}
    for reservation in committed:
        lines = [
            line
            for line in reservation.lines
            if (product := products.get(line.sku)) is not None and product.kind is ProductKind.VIRTUAL
        ]
        if lines:
            wanted[reservation.order_id] = lines
    return wanted


class CodeStatus(StrEnum):
    UNASSIGNED = "unassigned"
    ASSIGNED = "assigned"


# --- merchant quality: automatic suspension on refunds, complaints and ratings ------------------
#
# Each merchant's confirmed orders, refunded orders, after-sales cases (complaints) and verified
# purchases' ratings are counted twice: in `total`, since its first order, and in `judged`, over the
# orders confirmed since it was last reinstated. The rules judge `judged` only, so an admin's
# reinstatement is not undone at once by the numbers that led to the suspension: the merchant
# starts afresh and is judged again once enough new orders came in.

# Who an automatic suspension is recorded as having been decided by, in the merchant's history.
QUALITY_RULES = "quality-rules"


@dataclass(frozen=True)
class QualityCounts:
    """Signals counted over a merchant's orders: each order once, each after-sales case once."""

    orders: int = 0
    refunded: int = 0
    complaints: int = 0
    rating_sum: int = 0
    reviews: int = 0

    def __add__(self, other: QualityCounts) -> QualityCounts:
        return QualityCounts(
            self.orders + other.orders,
            self.refunded + other.refunded,
            self.complaints + other.complaints,
            self.rating_sum + other.rating_sum,
            self.reviews + other.reviews,
        )

    def __bool__(self) -> bool:
        return self != QualityCounts()

    @property
    def refund_rate(self) -> Fraction | None:
        """Refunded orders per confirmed order; None before the first order."""
        return Fraction(self.refunded, self.orders) if self.orders else None

    @property
    def complaint_rate(self) -> Fraction | None:
        """After-sales cases per confirmed order; None before the first order."""
        return Fraction(self.complaints, self.orders) if self.orders else None

    @property
    def average_rating(self) -> Fraction | None:
        return Fraction(self.rating_sum, self.reviews) if self.reviews else None


def percent(rate: Fraction) -> str:
    """`rate` in per cent for people: `40%`, `12.5%`."""
    return f"{float(rate * 100):.1f}".removesuffix(".0") + "%"


def _stars(rating: Fraction) -> str:
    return f"{float(rating):.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class QualityRules:
    """The limits past which a merchant is suspended automatically. Rates are judged only from
    `min_orders` confirmed orders on, the average rating only from `min_reviews` reviews on: a
    merchant's first refund must not read as a 100% refund rate."""

    min_orders: int = 20
    max_refund_rate: Fraction = Fraction(3, 10)
    max_complaint_rate: Fraction = Fraction(1, 5)
    min_rating: Fraction = Fraction(3)
    min_reviews: int = 10
    # Off: the counts are kept and shown, but nobody is suspended by them.
    auto_suspend: bool = True

    def crossed(self, counts: QualityCounts) -> list[str]:
        """Each limit `counts` crosses, in words for the merchant: the rates from `min_orders` orders
        on, the rating from `min_reviews` reviews on; [] within the limits or too early to judge."""
        return self._over(
            counts,
            rates=counts.orders >= self.min_orders,
            rating=counts.reviews >= self.min_reviews,
        )

    def over_limits(self, counts: QualityCounts) -> list[str]:
        """Each limit `counts` crosses, whether or not there are enough orders and reviews to judge."""
        return self._over(counts, rates=True, rating=True)

    def _over(self, counts: QualityCounts, *, rates: bool, rating: bool) -> list[str]:
        found = []
        refund_rate, complaint_rate = counts.refund_rate, counts.complaint_rate
        if rates and refund_rate is not None and refund_rate > self.max_refund_rate:
            found.append(
                f"refund rate {percent(refund_rate)} over {counts.orders} orders exceeds the "
                f"{percent(self.max_refund_rate)} limit"
            )
        if rates and complaint_rate is not None and complaint_rate > self.max_complaint_rate:
            found.append(
                f"complaint rate {percent(complaint_rate)} over {counts.orders} orders exceeds the "
                f"{percent(self.max_complaint_rate)} limit"
            )
        average = counts.average_rating
        if rating and average is not None and average < self.min_rating:
            found.append(
                f"average rating {_stars(average)} over {counts.reviews} reviews is below the minimum "
                f"of {_stars(self.min_rating)}"
            )
        return found


@dataclass(frozen=True)
class MerchantQuality:
    merchant_id: str
    total: QualityCounts = QualityCounts()
    judged: QualityCounts = QualityCounts()
    # The start of the judged window: the merchant's last reinstatement; None: since its first order.
    judged_since: datetime | None = None

    def as_of(self, merchant: Merchant | None) -> MerchantQuality:
        """This quality with the judged window restarted if the merchant was reinstated since it
        was last written: a reinstatement wipes the slate the rules judge, never the totals."""
        reinstated = None if merchant is None else last_reinstatement(merchant)
        if reinstated is None or (self.judged_since is not None and self.judged_since >= reinstated):
            return self
        return replace(self, judged=QualityCounts(), judged_since=reinstated)


def last_reinstatement(merchant: Merchant) -> datetime | None:
    reinstated = [e.at for e in merchant.history if e.action is MerchantAction.REINSTATE]
    return max(reinstated) if reinstated else None


def last_automatic_suspension(merchant: Merchant) -> StatusChange | None:
    """The latest suspension the quality rules decided, if the merchant is suspended by it still."""
    if merchant.status is not MerchantStatus.SUSPENDED or not merchant.history:
        return None
    latest = merchant.history[-1]
    if latest.action is MerchantAction.SUSPEND and latest.by == QUALITY_RULES:
        return latest
    return None


@dataclass(frozen=True)
class OrderSignals:
    """What the quality counts took from one order, so each signal is counted once: the merchants
    it was confirmed for and when, whether a refund was counted, the after-sales cases counted and
    the merchants whose part of it was reviewed."""

    order_id: str
    merchants: tuple[str, ...]
    confirmed_at: datetime
    refunded: bool = False
    cases: frozenset[str] = frozenset()
    reviewed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QualityChange:
    """Counts to add to a merchant's quality; `restart_judged_at`: the judged window restarts then
    (a reinstatement since the last write) and `judged` replaces the stored judged counts."""

    merchant_id: str
    total: QualityCounts
    judged: QualityCounts
    restart_judged_at: datetime | None = None


@dataclass(frozen=True)
class QualitySuspension:
    merchant: Merchant
    suspended: Merchant


@dataclass
class QualityBook:
    """A batch's quality signals decided against the orders and merchants they concern, as read.

    Orders confirmed before this book existed were never counted, so their later refunds,
    complaints and reviews are not counted either: a rate counts what its denominator counts."""

    orders: dict[str, OrderSignals]
    qualities: dict[str, MerchantQuality]
    merchants: Mapping[str, Merchant]
    now: datetime
    _changed_orders: dict[str, OrderSignals] = field(default_factory=dict)
    _total: dict[str, QualityCounts] = field(default_factory=dict)
    _judged: dict[str, QualityCounts] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        orders: Mapping[str, OrderSignals],
        qualities: Mapping[str, MerchantQuality],
        merchants: Mapping[str, Merchant],
        now: datetime,
    ) -> QualityBook:
        return cls(dict(orders), dict(qualities), merchants, now)

    def confirmed(self, order_id: str, merchant_ids: Iterable[str]) -> None:
        """The order was paid and its stock left: one more order for each of its merchants."""
        if order_id in self.orders:
            return
        merchants = tuple(dict.fromkeys(merchant_ids))
        self._put(OrderSignals(order_id, merchants, self.now))
        for merchant_id in merchants:
            self._add(merchant_id, self.now, QualityCounts(orders=1))

    def refund_requested(self, order_id: str) -> None:
        """A refund of the order: one refunded order for each of its merchants, however many
        refunds it gets."""
        signals = self.orders.get(order_id)
        if signals is None or signals.refunded:
            return
        self._put(replace(signals, refunded=True))
        for merchant_id in signals.merchants:
            self._add(merchant_id, signals.confirmed_at, QualityCounts(refunded=1))

    def after_sales_requested(self, order_id: str, case_id: str, merchant_id: str) -> None:
        """A complaint against the merchant, counted once per case."""
        signals = self.orders.get(order_id)
        if signals is None or case_id in signals.cases or merchant_id not in signals.merchants:
            return
        self._put(replace(signals, cases=signals.cases | {case_id}))
        self._add(merchant_id, signals.confirmed_at, QualityCounts(complaints=1))

    def reviewed(self, order_id: str, merchant_id: str, rating: int) -> None:
        """A verified purchase's rating of the merchant, counted once per order and merchant."""
        signals = self.orders.get(order_id)
        if signals is None or merchant_id in signals.reviewed or merchant_id not in signals.merchants:
            return
        self._put(replace(signals, reviewed=signals.reviewed | {merchant_id}))
        self._add(merchant_id, signals.confirmed_at, QualityCounts(rating_sum=rating, reviews=1))

    def changed_orders(self) -> list[OrderSignals]:
        return list(self._changed_orders.values())

    def changes(self) -> list[QualityChange]:
        found = []
        for merchant_id, total in self._total.items():
            stored = self.qualities.get(merchant_id, MerchantQuality(merchant_id))
            current = stored.as_of(self.merchants.get(merchant_id))
            restarted = current.judged_since != stored.judged_since
            found.append(
                QualityChange(
                    merchant_id,
                    total,
                    self._judged.get(merchant_id, QualityCounts()),
                    current.judged_since if restarted else None,
                )
            )
        return found

    def after(self, merchant_id: str) -> MerchantQuality:
        """The merchant's quality once this batch is stored."""
        stored = self.qualities.get(merchant_id, MerchantQuality(merchant_id))
        current = stored.as_of(self.merchants.get(merchant_id))
        return replace(
            current,
            total=current.total + self._total.get(merchant_id, QualityCounts()),
            judged=current.judged + self._judged.get(merchant_id, QualityCounts()),
        )

    def suspensions(self, rules: QualityRules) -> list[QualitySuspension]:
        """Approved merchants whose judged counts cross a limit after this batch, each suspended by
        the rules with the limits crossed as its reason."""
        if not rules.auto_suspend:
            return []
        found = []
        for merchant_id in self._total:
            merchant = self.merchants.get(merchant_id)
            if merchant is None or merchant.status is not MerchantStatus.APPROVED:
                continue
            crossed = rules.crossed(self.after(merchant_id).judged)
            if crossed:
                reason = "; ".join(crossed)
                suspended = merchant.moved(MerchantAction.SUSPEND, QUALITY_RULES, self.now, reason)
                found.append(QualitySuspension(merchant, suspended))
        return found

    def _put(self, signals: OrderSignals) -> None:
        self.orders[signals.order_id] = signals
        self._changed_orders[signals.order_id] = signals

    def _add(self, merchant_id: str, confirmed_at: datetime, counts: QualityCounts) -> None:
        self._total[merchant_id] = self._total.get(merchant_id, QualityCounts()) + counts
        stored = self.qualities.get(merchant_id, MerchantQuality(merchant_id))
        since = stored.as_of(self.merchants.get(merchant_id)).judged_since
        # A signal about an order confirmed before the window opened belongs to the old slate.
        if since is None or confirmed_at >= since:
            self._judged[merchant_id] = self._judged.get(merchant_id, QualityCounts()) + counts


# --- co-purchases and recommendations ------------------------------------------------------------
#
# From confirmed orders: for each SKU, how many orders held it and the SKUs bought with it (a
# bounded list: at most CO_PURCHASES_KEPT, most bought together first), and for each customer the
# SKUs they bought. What is recommended is filtered when it is read, against the products and
# merchants as they are then: never out of stock, inactive, or of a merchant that is not approved.

# Enough for the longest list asked for (MAX_RECOMMENDATIONS) after filtering, and a tail where
# newcomers can rise.
CO_PURCHASES_KEPT = 100
DEFAULT_RECOMMENDATIONS = 10
MAX_RECOMMENDATIONS = 50


@dataclass(frozen=True)
class SkuSales:
    """A SKU's confirmed orders and the SKUs bought with it, as (sku, orders) most first."""

    sku: str
    orders: int = 0
    bought_with: tuple[tuple[str, int], ...] = ()

    def sold_with(self, others: Iterable[str]) -> SkuSales:
        """After one more order holding this SKU and `others`.

        The list stays at most CO_PURCHASES_KEPT long: when it is full, a SKU not on it yet takes
        the place of the last one only if that one was bought with it once, so what is bought
        together again and again stays, while the one-off tail keeps room for newcomers."""
        counts = dict(self.bought_with)
        for other in dict.fromkeys(others):
            if other == self.sku:
                continue
            if other in counts:
                counts[other] += 1
            elif len(counts) < CO_PURCHASES_KEPT:
                counts[other] = 1
            else:
                last = max(counts.items(), key=_rank)
                if last[1] <= 1:
                    del counts[last[0]]
                    counts[other] = 1
        ranked = sorted(counts.items(), key=_rank)
        return SkuSales(self.sku, self.orders + 1, tuple(ranked))


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    """Most bought together first, then by sku."""
    sku, together = item
    return -together, sku


def record_sales(known: Mapping[str, SkuSales], orders: Iterable[Iterable[str]]) -> dict[str, SkuSales]:
    """The sales of every SKU the orders hold after them (each order's SKUs given once or more)."""
    changed: dict[str, SkuSales] = {}
    for skus in orders:
        distinct = list(dict.fromkeys(skus))
        for sku in distinct:
            before = changed.get(sku) or known.get(sku) or SkuSales(sku)
            changed[sku] = before.sold_with(distinct)
    return changed


@dataclass(frozen=True)
class Listing:
    """What a recommendation needs of a product: whether it can be bought, and its category."""

    sku: str
    name: str
    merchant_id: str
    price_fen: int
    currency: str
    category: str
    active: bool
    available: int

    def sellable(self, approved_merchants: Collection[str]) -> bool:
        return self.active and self.available > 0 and self.merchant_id in approved_merchants


class RecommendationSource(StrEnum):
    """Why a product is recommended."""

    BOUGHT_TOGETHER = "bought_together"  # bought with what the customer bought
    CATEGORY_BEST_SELLER = "category_best_seller"  # sells best in a category the customer bought from
    BEST_SELLER = "best_seller"  # sells best overall


@dataclass(frozen=True)
class Recommendation:
    sku: str
    source: RecommendationSource
    # Orders that bought it with the customer's SKUs, or orders that bought it (best sellers).
    score: int


def co_purchase_scores(bought: Mapping[str, int], sales: Mapping[str, SkuSales]) -> list[tuple[str, int]]:
    """SKUs bought with what the customer bought, not bought by them: each scored by the orders that
    held it with any of the customer's SKUs, highest first (then by sku)."""
    scores: dict[str, int] = {}
    for sku in bought:
        for other, together in sales.get(sku, SkuSales(sku)).bought_with:
            if other not in bought:
                scores[other] = scores.get(other, 0) + together
    return sorted(scores.items(), key=_rank)


@dataclass
class RecommendationList:
    """Fills up to `limit` recommendations from ranked candidates, the first sources first, each SKU
    once, never one the customer bought or one that cannot be bought."""

    limit: int
    listings: dict[str, Listing]
    approved_merchants: set[str]
    exclude: Collection[str] = ()
    picked: list[Recommendation] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.picked) >= self.limit

    def add(self, ranked: Iterable[tuple[str, int]], source: RecommendationSource) -> None:
        taken = {r.sku for r in self.picked}
        for sku, score in ranked:
            if self.full:
                return
            listing = self.listings.get(sku)
            if (
                sku in taken
                or sku in self.exclude
                or listing is None
                or not listing.sellable(self.approved_merchants)
            ):
                continue
            self.picked.append(Recommendation(sku, source, score))
            taken.add(sku)


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

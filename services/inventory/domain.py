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
            slots=[slot.announced() for slot in slots],
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
    # The seats of service products' slots, as `stock` is the units of other products.
    slots: Mapping[SlotKey, StockDelta] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.stock or self.created or self.moved_from_held or self.moved_from_expired or self.slots
        )


def hold_deadline(now: datetime, ttl: timedelta, hold_until: datetime | None, cap: timedelta) -> datetime:
    """Until when a reservation made at `now` holds its stock: as long as its order may still be
    approved and paid (`hold_until`), at least `ttl`, and never longer than `cap` from now."""
    wanted = now + ttl if hold_until is None else max(now + ttl, hold_until)
    return min(wanted, now + cap)


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
    # Merchants with a short line, so the caller can load their other products as substitutes.
    short_merchants: set[str] = field(default_factory=set)
    # The slots the batch's service lines book; a line's slot missing here is not bookable.
    slots: dict[SlotKey, Slot] = field(default_factory=dict)
    _before: dict[str, StockDelta] = field(default_factory=dict)
    _slots_before: dict[SlotKey, StockDelta] = field(default_factory=dict)
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
        slots: Mapping[SlotKey, Slot] | None = None,
    ) -> Ledger:
        """A working copy: the caller's objects stay as they were read. Without `merchants` nothing
        can be reserved (releases, commits and re-reservations of paid orders need none); without
        the `slots` its service lines name, nothing of a service product can."""
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
            _slots_before={key: StockDelta(s.available, s.reserved) for key, s in slots.items()},
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
        for line in wanted:
            stock = self._stock_of(line)
            stock.available -= line.quantity
            stock.reserved += line.quantity
        expires_at = hold_deadline(self.now, self.ttl, hold_until, self.max_hold)
        self._add(Reservation(order_id, wanted, ReservationStatus.HELD, correlation_id, expires_at))
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
        self._move(reservation, ReservationStatus.RELEASED, reason)
        return [StockReleased(order_id=order_id, lines=reservation.lines, reason=reason)]

    def commit(self, order_id: str) -> list[Event]:
        """The held stock leaves for good."""
        reservation = self._held(order_id)
        if reservation is None:
            return []
        for line in reservation.lines:
            self._stock_of(line).reserved -= line.quantity
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
        if shortages:
            status, reason = ReservationStatus.REJECTED, StockRejectReason.RESERVATION_LOST.value
            events: list[Event] = [
                StockRejected(
                    order_id=order_id, reason=StockRejectReason.RESERVATION_LOST, shortages=shortages
                )
            ]
        else:
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

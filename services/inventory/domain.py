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

from shared.contracts import (
    CURRENCY,
    MAX_UNITS_PER_ORDER,
    Event,
    MerchantUpserted,
    OrderEndReason,
    OrderLine,
    PaymentMethod,
    ProductKind,
    ProductUpserted,
    ReservationEndReason,
    Shortage,
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
)

MAX_SUBSTITUTES = 3
# Sane bounds for money and stock: far above any real catalog, far below where int64 or a float
# on the way through JSON would lose a unit.
MAX_PRICE_FEN = 10**10
MAX_STOCK = 10**10
EVERY_PAYMENT_METHOD = frozenset(PaymentMethod)


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    payment_methods: frozenset[PaymentMethod] = EVERY_PAYMENT_METHOD

    @property
    def accepted_methods(self) -> list[PaymentMethod]:
        """The methods it accepts, in a stable order (the order PaymentMethod lists them in)."""
        return [method for method in PaymentMethod if method in self.payment_methods]

    def upserted(self) -> MerchantUpserted:
        return MerchantUpserted(
            merchant_id=self.merchant_id, name=self.name, payment_methods=self.accepted_methods
        )


class StockOutOfRange(ValueError):
    """A stock change would take sellable units below zero or above MAX_STOCK; nothing changes."""


@dataclass(frozen=True)
class ProductDetails:
    """Everything about a product a catalog edit may change: all of it but its stock."""

    name: str
    merchant_id: str
    price_fen: int
    kind: ProductKind = ProductKind.PHYSICAL
    active: bool = True
    max_per_order: int = MAX_UNITS_PER_ORDER


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

    def upserted(self) -> ProductUpserted:
        return ProductUpserted(
            sku=self.sku,
            name=self.name,
            merchant_id=self.merchant_id,
            kind=self.kind,
            price_fen=self.price_fen,
            currency=self.currency,
            active=self.active,
            max_per_order=self.max_per_order,
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


@dataclass(frozen=True)
class StockDelta:
    available: int
    reserved: int


@dataclass(frozen=True)
class Changes:
    """What a batch changed: stock increments and reservations, new or moved on from `held`."""

    stock: Mapping[str, StockDelta]
    created: Sequence[Reservation]
    moved_from_held: Sequence[Reservation]

    def __bool__(self) -> bool:
        return bool(self.stock or self.created or self.moved_from_held)


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
    # Merchants with a short line, so the caller can load their other products as substitutes.
    short_merchants: set[str] = field(default_factory=set)
    _before: dict[str, StockDelta] = field(default_factory=dict)
    _created: dict[str, Reservation] = field(default_factory=dict)
    _moved: dict[str, Reservation] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        products: Mapping[str, Product],
        reservations: Mapping[str, Reservation],
        *,
        now: datetime,
        ttl: timedelta,
    ) -> Ledger:
        """A working copy: the caller's objects stay as they were read."""
        return cls(
            products={sku: replace(p) for sku, p in products.items()},
            reservations={oid: replace(r, lines=list(r.lines)) for oid, r in reservations.items()},
            now=now,
            ttl=ttl,
            _before={sku: StockDelta(p.available, p.reserved) for sku, p in products.items()},
        )

    def reserve(self, order_id: str, lines: Sequence[OrderLine], correlation_id: str) -> list[Event]:
        """Hold every line or none; an order already decided is not decided again."""
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
        for line in wanted:
            product = self.products[line.sku]
            product.available -= line.quantity
            product.reserved += line.quantity
        expires_at = self.now + self.ttl
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
        return Changes(stock, list(self._created.values()), list(self._moved.values()))

    def _sellable(self, sku: str) -> int:
        product = self.products.get(sku)
        if product is None or not product.active:
            return 0
        return max(product.available, 0)

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

"""The inventory store on plain dicts with the Mongo store's guards; tests/contract holds the two alike."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.inventory.domain import (
    Changes,
    Merchant,
    Product,
    Reservation,
    ReservationStatus,
    Subscription,
    SubstituteSearch,
)
from services.inventory.store import CANDIDATES_PER_SIDE, StockConflict
from shared.contracts import MerchantStatus
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass
class _State:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # By (sku, customer id).
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)


class InMemoryInventoryStore(LedgerTwin):
    """Same behaviour as the Mongo store, including the stock guards, on plain dicts."""

    def __init__(self) -> None:
        self.state = _State()
        self.ledger = AppliedLedger()

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[_MemoryTransaction]:
        # Work on a copy and swap it in at the end: an exception leaves the state untouched.
        draft = copy.deepcopy(self.state)
        tx = _MemoryTransaction(state=draft)
        yield tx
        applied = self.ledger.claim(consumer, tx)
        self.state = draft
        self.ledger.record(applied, tx)

    async def list_products(self, merchant_id: str | None = None) -> list[Product]:
        products = sorted(self.state.products.values(), key=lambda p: p.sku)
        return [copy.copy(p) for p in products if merchant_id in (None, p.merchant_id)]

    async def get_product(self, sku: str) -> Product | None:
        product = self.state.products.get(sku)
        return None if product is None else copy.copy(product)

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        return self.state.merchants.get(merchant_id)

    async def list_merchants(self, status: MerchantStatus | None = None) -> list[Merchant]:
        merchants = sorted(self.state.merchants.values(), key=lambda m: m.merchant_id)
        return [m for m in merchants if status in (None, m.status)]


@dataclass(kw_only=True)
class _MemoryTransaction(PendingWrites):
    state: _State

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        return {sku: copy.copy(p) for sku in skus if (p := self.state.products.get(sku)) is not None}

    async def substitute_candidates(
        self, searches: Collection[SubstituteSearch], exclude: Collection[str]
    ) -> list[Product]:
        on_sale = [
            p for p in self.state.products.values() if p.active and p.available > 0 and p.sku not in exclude
        ]
        found: dict[str, Product] = {}
        for search in searches:
            shelf = [p for p in on_sale if search.matches(p)]
            above = sorted(
                (p for p in shelf if p.price_fen >= search.price_fen),
                key=lambda p: (p.price_fen, -p.available, p.sku),
            )
            below = sorted(
                (p for p in shelf if p.price_fen < search.price_fen),
                key=lambda p: (-p.price_fen, -p.available, p.sku),
            )
            found.update(
                {p.sku: copy.copy(p) for p in [*above[:CANDIDATES_PER_SIDE], *below[:CANDIDATES_PER_SIDE]]}
            )
        return [found[sku] for sku in sorted(found)]

    async def subscriptions(self, sku: str) -> list[Subscription]:
        found = [s for (of, _), s in self.state.subscriptions.items() if of == sku]
        return sorted(found, key=lambda s: s.customer_id)

    async def subscribe(self, subscription: Subscription) -> bool:
        key = (subscription.sku, subscription.customer_id)
        if key in self.state.subscriptions:
            return False
        self.state.subscriptions[key] = subscription
        return True

    async def unsubscribe(self, sku: str, customer_id: str) -> bool:
        return self.state.subscriptions.pop((sku, customer_id), None) is not None

    async def end_subscriptions(self, subscriptions: Collection[Subscription]) -> None:
        ending = {s.subscription_id for s in subscriptions}
        for key, stored in list(self.state.subscriptions.items()):
            if stored.subscription_id in ending:
                del self.state.subscriptions[key]

    async def mark_low_stock(self, notified: Mapping[str, bool]) -> None:
        for sku, flag in notified.items():
            if sku in self.state.products:
                self.state.products[sku].low_stock_notified = flag

    async def reservations(self, order_ids: Collection[str]) -> dict[str, Reservation]:
        return {
            oid: copy.deepcopy(r) for oid in order_ids if (r := self.state.reservations.get(oid)) is not None
        }

    async def expired_reservations(self, now: datetime, limit: int) -> dict[str, Reservation]:
        held = [
            r
            for r in self.state.reservations.values()
            if r.status is ReservationStatus.HELD and r.expires_at is not None and r.expires_at <= now
        ]
        return {r.order_id: copy.deepcopy(r) for r in _by_expiry(held)[:limit]}

    async def merchant(self, merchant_id: str) -> Merchant | None:
        return self.state.merchants.get(merchant_id)

    async def merchants(self, merchant_ids: Collection[str]) -> dict[str, Merchant]:
        return {m: found for m in merchant_ids if (found := self.state.merchants.get(m)) is not None}

    async def put_merchant(self, merchant: Merchant) -> None:
        self.state.merchants[merchant.merchant_id] = merchant

    async def products_of(self, merchant_id: str) -> list[Product]:
        products = sorted(self.state.products.values(), key=lambda p: p.sku)
        return [copy.copy(p) for p in products if p.merchant_id == merchant_id]

    async def save(self, changes: Changes) -> None:
        for sku, delta in changes.stock.items():
            product = self.state.products.get(sku)
            if (
                product is None
                or product.available + delta.available < 0
                or product.reserved + delta.reserved < 0
            ):
                raise StockConflict(f"stock update for {sku} lost a race")
            product.available += delta.available
            product.reserved += delta.reserved
        for reservation in changes.created:
            if reservation.order_id in self.state.reservations:
                raise StockConflict(f"reservation {reservation.order_id} written concurrently")
            self.state.reservations[reservation.order_id] = copy.deepcopy(reservation)
        for reservation in changes.moved_from_held:
            stored = self.state.reservations.get(reservation.order_id)
            if stored is None or stored.status is not ReservationStatus.HELD:
                raise StockConflict(f"reservation {reservation.order_id} already moved on")
            self.state.reservations[reservation.order_id] = copy.deepcopy(reservation)
        for reservation in changes.moved_from_expired:
            stored = self.state.reservations.get(reservation.order_id)
            if stored is None or not stored.expired:
                raise StockConflict(f"reservation {reservation.order_id} is no longer released as expired")
            self.state.reservations[reservation.order_id] = copy.deepcopy(reservation)

    async def put_product(self, product: Product) -> Product:
        existing = self.state.products.get(product.sku)
        stored = copy.copy(product)
        if existing is None:
            stored.reserved, stored.low_stock_notified = 0, False
        else:
            stored.available, stored.reserved = existing.available, existing.reserved
            stored.low_stock_notified = existing.low_stock_notified
        self.state.products[product.sku] = stored
        return copy.copy(stored)


def _by_expiry(reservations: Iterable[Reservation]) -> list[Reservation]:
    return sorted(reservations, key=lambda r: r.expires_at or datetime.max.replace(tzinfo=UTC))

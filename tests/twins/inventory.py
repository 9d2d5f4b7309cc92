"""The inventory store on plain dicts with the Mongo store's guards; tests/contract holds the two alike."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.inventory.domain import (
    Changes,
    Merchant,
    Product,
    Reservation,
    ReservationStatus,
    Slot,
    SlotKey,
)
from services.inventory.store import CANDIDATES_PER_MERCHANT, StockConflict
from shared.contracts import MerchantStatus
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass
class _State:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    slots: dict[SlotKey, Slot] = field(default_factory=dict)


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

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        return _slots_of(self.state, skus)


@dataclass(kw_only=True)
class _MemoryTransaction(PendingWrites):
    state: _State

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        return {sku: copy.copy(p) for sku in skus if (p := self.state.products.get(sku)) is not None}

    async def substitute_candidates(
        self, merchant_ids: Collection[str], exclude: Collection[str]
    ) -> list[Product]:
        found = [
            copy.copy(p)
            for p in self.state.products.values()
            if p.merchant_id in merchant_ids and p.active and p.available > 0 and p.sku not in exclude
        ]
        return sorted(found, key=lambda p: (-p.available, p.sku))[
            : CANDIDATES_PER_MERCHANT * len(merchant_ids)
        ]

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
        for key, delta in changes.slots.items():
            slot = self.state.slots.get(key)
            if slot is None or slot.available + delta.available < 0 or slot.reserved + delta.reserved < 0:
                raise StockConflict(f"seat update for slot {key} lost a race")
            slot.available += delta.available
            slot.reserved += delta.reserved
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
            stored.reserved = 0
        else:
            stored.available, stored.reserved = existing.available, existing.reserved
        self.state.products[product.sku] = stored
        return copy.copy(stored)

    async def slots(self, keys: Collection[SlotKey]) -> dict[SlotKey, Slot]:
        return {key: copy.copy(s) for key in keys if (s := self.state.slots.get(key)) is not None}

    async def slots_of(self, skus: Collection[str]) -> list[Slot]:
        return _slots_of(self.state, skus)

    async def put_slot(self, slot: Slot, expected: Slot | None) -> None:
        stored = self.state.slots.get(slot.key)
        if expected is None and stored is not None:
            raise StockConflict(f"slot {slot.key} was created concurrently")
        if expected is not None and not _as_read(stored, expected):
            raise StockConflict(f"slot {slot.key} changed while being written")
        self.state.slots[slot.key] = copy.copy(slot)

    async def remove_slot(self, expected: Slot) -> None:
        if not _as_read(self.state.slots.get(expected.key), expected):
            raise StockConflict(f"slot {expected.key} changed while being removed")
        del self.state.slots[expected.key]


def _slots_of(state: _State, skus: Collection[str]) -> list[Slot]:
    found = [copy.copy(s) for s in state.slots.values() if s.sku in skus]
    return sorted(found, key=lambda s: (s.sku, s.starts_at, s.slot_id))


def _as_read(stored: Slot | None, expected: Slot) -> bool:
    # The Mongo store's compare-and-set looks at the seats only.
    return stored is not None and (stored.capacity, stored.available, stored.reserved) == (
        expected.capacity,
        expected.available,
        expected.reserved,
    )


def _by_expiry(reservations: Iterable[Reservation]) -> list[Reservation]:
    return sorted(reservations, key=lambda r: r.expires_at or datetime.max.replace(tzinfo=UTC))

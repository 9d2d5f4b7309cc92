"""In-memory twins of the order service's store and order-number sequence, for handler unit tests.

They keep the guarantees the handlers rely on from MongoDB and Redis (tests/contract checks the
store against the real one): a transaction stores all of its writes or none, a save is guarded by
the version the order was read at, order numbers and idempotency keys are unique, a sweeper's claim
keeps other sweepers off an order until it expires, and a day's number sequence only moves forward.
Listings read the same insert-only lookup keys as Mongo's, through the same paging
(store.page_through), so pages, cursors and scan bounds are alike.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.order.domain import WAITING, CatalogItem, CouponTerms, MerchantTerms, Order
from services.order.numbers import format_order_no, order_day, parse_order_no
from services.order.store import (
    CUSTOMER_ORDERS,
    MERCHANT_ORDERS,
    ORDER_NUMBERS,
    ConcurrentUpdate,
    IdempotencyConflict,
    KeyRecord,
    NewOrder,
    OrderNumberTaken,
    OrderPage,
    OrderQuery,
    OrderTransaction,
    customer_order_key,
    merchant_order_keys,
    page_through,
)
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass(frozen=True)
class KeyUse:
    """The order an Idempotency-Key created, as the idempotency_keys collection records it."""

    order_id: str
    fingerprint: str
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    owner: str
    until: datetime


@dataclass
class _Pending(PendingWrites):
    """A transaction's writes; checked as they are made, as Mongo checks them, stored at commit."""

    store: InMemoryOrderStore = field(repr=False, kw_only=True)
    new: dict[str, Order] = field(default_factory=dict)
    keys: dict[str, KeyUse] = field(default_factory=dict)
    changed: dict[str, Order] = field(default_factory=dict)
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    merchants: dict[str, MerchantTerms] = field(default_factory=dict)
    coupons: dict[str, CouponTerms] = field(default_factory=dict)

    async def insert_new(self, new: Sequence[NewOrder]) -> None:
        for n in new:
            if n.idempotency is None:
                continue
            earlier = self.store.idempotency.get(n.idempotency.key) or self.keys.get(n.idempotency.key)
            if earlier is not None:
                raise IdempotencyConflict(earlier.order_id, earlier.fingerprint)
            self.keys[n.idempotency.key] = KeyUse(
                n.order.order_id, n.idempotency.fingerprint, n.order.placed_at
            )
        for n in new:
            order = n.order
            if order.order_no in self.store.order_numbers or order.order_no in self.numbers_used():
                raise OrderNumberTaken(order.order_no)
            if order.order_id in self.store.orders or order.order_id in self.new:
                raise ValueError(f"order {order.order_id} exists already")
            order.version = 1
            self.new[order.order_id] = copy.deepcopy(order)

    def numbers_used(self) -> set[str]:
        return {order.order_no for order in self.new.values()}

    async def save_changed(self, orders: Sequence[Order]) -> None:
        stale = [o for o in orders if not self.store.is_at_version(o)]
        for order in orders:
            order.version += 1
        if stale:
            raise ConcurrentUpdate(f"{len(stale)} of {len(orders)} orders changed concurrently")
        self.changed.update((o.order_id, copy.deepcopy(o)) for o in orders)

    async def upsert_catalog(self, items: Sequence[CatalogItem]) -> None:
        self.catalog.update((item.sku, item) for item in items)

    async def upsert_merchants(self, terms: Sequence[MerchantTerms]) -> None:
        self.merchants.update((t.merchant_id, t) for t in terms)

    async def upsert_coupons(self, coupons: Sequence[CouponTerms]) -> None:
        self.coupons.update((c.code, c) for c in coupons)


@dataclass
class InMemoryOrderStore(LedgerTwin):
    orders: dict[str, Order] = field(default_factory=dict)
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    merchants: dict[str, MerchantTerms] = field(default_factory=dict)
    coupons: dict[str, CouponTerms] = field(default_factory=dict)
    idempotency: dict[str, KeyUse] = field(default_factory=dict)
    # The insert-only lookups, as in Mongo: key -> order id.
    order_numbers: dict[str, str] = field(default_factory=dict)
    customer_orders: dict[str, str] = field(default_factory=dict)
    merchant_orders: dict[str, str] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    def is_at_version(self, order: Order) -> bool:
        stored = self.orders.get(order.order_id)
        return stored is not None and stored.version == order.version

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[OrderTransaction]:
        tx = _Pending(store=self)
        yield tx
        applied = self.ledger.claim(consumer, tx)
        # What the body checked may have changed while it awaited; Mongo would refuse the commit.
        if any(self.orders.get(o.order_id, o).version != o.version - 1 for o in tx.changed.values()):
            raise ConcurrentUpdate("an order changed concurrently")
        if any(key in self.idempotency for key in tx.keys) or not self.order_numbers.keys().isdisjoint(
            tx.numbers_used()
        ):
            raise ConcurrentUpdate("a concurrent writer took an order number or idempotency key")
        self.orders.update(tx.new)
        self.orders.update(tx.changed)
        for order in tx.new.values():
            self.order_numbers[order.order_no] = order.order_id
            self.customer_orders[customer_order_key(order)] = order.order_id
            self.merchant_orders.update((key, order.order_id) for key in merchant_order_keys(order))
        self.idempotency.update(tx.keys)
        self.catalog.update(tx.catalog)
        self.merchants.update(tx.merchants)
        self.coupons.update(tx.coupons)
        self.ledger.record(applied, tx)

    async def get(self, order_id: str) -> Order | None:
        found = self.orders.get(order_id)
        return None if found is None else copy.deepcopy(found)

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        return {oid: copy.deepcopy(self.orders[oid]) for oid in set(order_ids) if oid in self.orders}

    async def by_number(self, order_no: str) -> Order | None:
        order_id = self.order_numbers.get(order_no)
        return None if order_id is None else await self.get(order_id)

    async def idempotency_key(self, key: str) -> KeyRecord | None:
        used = self.idempotency.get(key)
        return None if used is None else KeyRecord(used.order_id, used.fingerprint)

    async def page(self, query: OrderQuery) -> OrderPage:
        return await page_through(query, self._scan, self.get_many)

    async def _scan(self, lookup: str, lower: str, upper: str, limit: int) -> list[tuple[str, str]]:
        index = {
            ORDER_NUMBERS: self.order_numbers,
            CUSTOMER_ORDERS: self.customer_orders,
            MERCHANT_ORDERS: self.merchant_orders,
        }[lookup]
        keys = sorted((key for key in index if lower <= key < upper), reverse=True)[:limit]
        return [(key, index[key]) for key in keys]

    async def claim_overdue(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Order]:
        def claimable(order: Order) -> bool:
            claim = self.claims.get(order.order_id)
            return claim is None or claim.until <= now or claim.owner == owner

        due = [
            o
            for o in self.orders.values()
            if o.status in WAITING and o.deadline_at is not None and o.deadline_at <= now and claimable(o)
        ]
        due.sort(key=lambda o: o.deadline_at or now)
        for order in due[:limit]:
            self.claims[order.order_id] = Claim(owner, now + lease)
        return [copy.deepcopy(o) for o in due[:limit]]

    async def latest_order_no(self, day: str) -> str | None:
        return max((no for no in self.order_numbers if no.startswith(f"{day}-")), default=None)

    async def catalog_items(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        return {sku: self.catalog[sku] for sku in set(skus) if sku in self.catalog}

    async def catalog_page(self, limit: int) -> list[CatalogItem]:
        return sorted((i for i in self.catalog.values() if i.active), key=lambda i: i.sku)[:limit]

    async def merchant_terms(self, merchant_ids: Iterable[str]) -> dict[str, MerchantTerms]:
        return {m: self.merchants[m] for m in set(merchant_ids) if m in self.merchants}

    async def coupon(self, code: str) -> CouponTerms | None:
        return self.coupons.get(code)


@dataclass
class InMemoryOrderNumbers:
    """Redis's per-day counters; `forget()` loses them, as a Redis restart without persistence does."""

    counters: dict[str, int] = field(default_factory=dict)

    async def next(self, now: datetime) -> str:
        day = order_day(now)
        self.counters[day] = self.counters.get(day, 0) + 1
        return format_order_no(day, self.counters[day])

    async def continue_after(self, order_no: str) -> None:
        day, sequence = parse_order_no(order_no)
        self.counters[day] = max(self.counters.get(day, 0), sequence)

    def forget(self) -> None:
        self.counters.clear()

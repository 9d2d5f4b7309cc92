"""The inventory store on plain dicts with the Mongo store's guards; tests/contract holds the two alike."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import SecretStr

from services.inventory.domain import (
    Changes,
    CodeStatus,
    Coupon,
    CouponChanges,
    CouponUse,
    Listing,
    Merchant,
    MerchantQuality,
    OrderSignals,
    Product,
    QualityChange,
    Reservation,
    ReservationStatus,
    SkuSales,
    Slot,
    SlotKey,
    Subscription,
    SubstituteSearch,
)
from services.inventory.store import (
    CANDIDATES_PER_SIDE,
    PURCHASES_READ,
    CodeConflict,
    Purchase,
    StockConflict,
)
from shared.contracts import MerchantStatus
from shared.crypto import PersonalData
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin

# The twin's key ring unless a test brings its own: codes are sealed here as in the Mongo store.
TWIN_PERSONAL_DATA = PersonalData(SecretStr("twin:dHdpbi1vbmx5LWludmVudG9yeS1jb2Rlcy1rZXktMDE"))


@dataclass
class PooledCode:
    sku: str
    index: str
    sealed_code: str
    status: CodeStatus = CodeStatus.UNASSIGNED
    order_id: str | None = None


# --- merchant quality and co-purchases -----------------------------------------------------------


@dataclass
class _SignalsState:
    orders: dict[str, OrderSignals] = field(default_factory=dict)
    qualities: dict[str, MerchantQuality] = field(default_factory=dict)
    sales: dict[str, SkuSales] = field(default_factory=dict)
    # (customer id, sku): how many of the customer's orders held it.
    purchases: dict[tuple[str, str], int] = field(default_factory=dict)


def _category(product: Product) -> str:
    # Products gain a category with the catalog's descriptions; until then every one has none.
    return str(getattr(product, "category", "") or "")


class _SignalsTransaction:
    state: _State

    async def order_signals(self, order_ids: Collection[str]) -> dict[str, OrderSignals]:
        orders = self.state.signals.orders
        return {oid: found for oid in order_ids if (found := orders.get(oid)) is not None}

    async def merchant_qualities(self, merchant_ids: Collection[str]) -> dict[str, MerchantQuality]:
        qualities = self.state.signals.qualities
        return {m: found for m in merchant_ids if (found := qualities.get(m)) is not None}

    async def save_quality(self, orders: Sequence[OrderSignals], changes: Sequence[QualityChange]) -> None:
        for signals in orders:
            self.state.signals.orders[signals.order_id] = signals
        for change in changes:
            stored = self.state.signals.qualities.get(change.merchant_id, MerchantQuality(change.merchant_id))
            if change.restart_judged_at is None:
                judged, since = stored.judged + change.judged, stored.judged_since
            else:
                judged, since = change.judged, change.restart_judged_at
            self.state.signals.qualities[change.merchant_id] = MerchantQuality(
                change.merchant_id, stored.total + change.total, judged, since
            )

    async def sku_sales(self, skus: Collection[str]) -> dict[str, SkuSales]:
        sales = self.state.signals.sales
        return {sku: found for sku in skus if (found := sales.get(sku)) is not None}

    async def save_sales(self, sales: Sequence[SkuSales], purchases: Sequence[Purchase]) -> None:
        for sold in sales:
            self.state.signals.sales[sold.sku] = sold
        for purchase in purchases:
            key = (purchase.customer_id, purchase.sku)
            self.state.signals.purchases[key] = self.state.signals.purchases.get(key, 0) + 1


class _SignalsReads:
    state: _State

    async def merchant_quality(self, merchant_id: str) -> MerchantQuality | None:
        return self.state.signals.qualities.get(merchant_id)

    async def merchant_qualities_all(self) -> list[MerchantQuality]:
        return [self.state.signals.qualities[m] for m in sorted(self.state.signals.qualities)]

    async def sales(self, skus: Collection[str]) -> dict[str, SkuSales]:
        return {sku: found for sku in skus if (found := self.state.signals.sales.get(sku)) is not None}

    async def purchases(self, customer_id: str) -> dict[str, int]:
        bought = [
            (sku, n) for (customer, sku), n in self.state.signals.purchases.items() if customer == customer_id
        ]
        return dict(sorted(bought, key=lambda item: (-item[1], item[0]))[:PURCHASES_READ])

    async def best_sellers(
        self, limit: int, categories: Collection[str] | None = None
    ) -> list[tuple[str, int]]:
        sales = list(self.state.signals.sales.values())
        if categories is not None:
            products = self.state.products
            in_categories = {
                sku
                for sku, p in products.items()
                if _category(p) in categories and p.active and p.available > 0
            }
            sales = [s for s in sales if s.sku in in_categories]
        ranked = sorted(sales, key=lambda s: (-s.orders, s.sku))
        return [(s.sku, s.orders) for s in ranked[:limit]]

    async def listings(self, skus: Collection[str]) -> dict[str, Listing]:
        return {
            sku: Listing(
                sku=p.sku,
                name=p.name,
                merchant_id=p.merchant_id,
                price_fen=p.price_fen,
                currency=p.currency,
                category=_category(p),
                active=p.active,
                available=p.available,
            )
            for sku in skus
            if (p := self.state.products.get(sku)) is not None
        }

    async def approved_merchants(self, merchant_ids: Collection[str]) -> set[str]:
        merchants = self.state.merchants
        return {m for m in merchant_ids if m in merchants and merchants[m].status is MerchantStatus.APPROVED}


@dataclass
class _State:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    coupons: dict[str, Coupon] = field(default_factory=dict)
    coupon_uses: dict[str, CouponUse] = field(default_factory=dict)
    # In the order they were added, which is the order they are assigned in.
    codes: list[PooledCode] = field(default_factory=list)
    signals: _SignalsState = field(default_factory=_SignalsState)
    # By (sku, customer id).
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    slots: dict[SlotKey, Slot] = field(default_factory=dict)


class InMemoryInventoryStore(LedgerTwin, _SignalsReads):
    """Same behaviour as the Mongo store, including the stock guards, on plain dicts."""

    def __init__(self, personal: PersonalData = TWIN_PERSONAL_DATA) -> None:
        self.state = _State()
        self.ledger = AppliedLedger()
        self.personal = personal

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[_MemoryTransaction]:
        # Work on a copy and swap it in at the end: an exception leaves the state untouched.
        draft = copy.deepcopy(self.state)
        tx = _MemoryTransaction(state=draft, personal=self.personal)
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

    async def get_coupon(self, code: str) -> Coupon | None:
        coupon = self.state.coupons.get(code)
        return None if coupon is None else copy.copy(coupon)

    async def list_coupons(self, merchant_id: str | None = None) -> list[Coupon]:
        coupons = sorted(self.state.coupons.values(), key=lambda c: c.code)
        return [copy.copy(c) for c in coupons if merchant_id in (None, c.terms.merchant_id)]

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        return _slots_of(self.state, skus)


@dataclass(kw_only=True)
class _MemoryTransaction(PendingWrites, _SignalsTransaction):
    state: _State
    personal: PersonalData

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
        self._save_coupons(changes.coupons)

    def _save_coupons(self, changes: CouponChanges) -> None:
        for code, delta in changes.counts.items():
            coupon = self.state.coupons.get(code)
            if coupon is None or coupon.left + delta.left < 0 or coupon.held + delta.held < 0:
                raise StockConflict(f"coupon count of {code} lost a race")
            coupon.left += delta.left
            coupon.held += delta.held
            coupon.used += delta.used
        redeemed = {use.redemption for use in self.state.coupon_uses.values() if use.redemption is not None}
        for use in changes.created:
            if use.order_id in self.state.coupon_uses or use.redemption in redeemed:
                raise StockConflict(f"coupon use of {use.order_id} written concurrently")
            self.state.coupon_uses[use.order_id] = copy.copy(use)
            if use.redemption is not None:
                redeemed.add(use.redemption)
        for move in changes.moved:
            stored = self.state.coupon_uses.get(move.use.order_id)
            if stored is None or stored.status is not move.was:
                raise StockConflict(f"coupon use of {move.use.order_id} already moved on")
            if move.use.redemption is not None and stored.redemption is None:
                if move.use.redemption in redeemed:
                    raise StockConflict(f"coupon use of {move.use.order_id} written concurrently")
                redeemed.add(move.use.redemption)
            self.state.coupon_uses[move.use.order_id] = copy.copy(move.use)

    async def coupons(self, codes: Collection[str]) -> dict[str, Coupon]:
        return {code: copy.copy(c) for code in codes if (c := self.state.coupons.get(code)) is not None}

    async def coupon_uses(self, order_ids: Collection[str]) -> dict[str, CouponUse]:
        return {o: copy.copy(u) for o in order_ids if (u := self.state.coupon_uses.get(o)) is not None}

    async def redeemed(self, claims: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        taken = {use.redemption for use in self.state.coupon_uses.values()}
        return {claim for claim in claims if claim in taken}

    async def put_coupon(self, coupon: Coupon, read: Coupon | None) -> Coupon:
        stored = self.state.coupons.get(coupon.code)
        if read is None:
            if stored is not None:
                raise StockConflict(f"coupon {coupon.code} was created concurrently")
            created = Coupon.create(coupon.code, coupon.terms)
            self.state.coupons[coupon.code] = created
            return copy.copy(created)
        more = coupon.terms.total_uses - read.terms.total_uses
        if stored is None or stored.terms.total_uses != read.terms.total_uses or stored.left + more < 0:
            raise StockConflict(f"coupon {coupon.code} changed since it was read")
        stored.terms, stored.left = coupon.terms, stored.left + more
        return copy.copy(stored)

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

    async def pooled_codes(self, sku: str, codes: Collection[str]) -> set[str]:
        pooled = {c.index for c in self.state.codes if c.sku == sku}
        return {code for code in codes if self.personal.blind_index(code) in pooled}

    async def add_codes(self, sku: str, codes: Sequence[str]) -> None:
        pooled = {c.index for c in self.state.codes if c.sku == sku}
        for code in codes:
            index = self.personal.blind_index(code)
            if index in pooled:
                raise CodeConflict(f"a code of {sku} was added to its pool meanwhile")
            pooled.add(index)
            self.state.codes.append(PooledCode(sku, index, self.personal.seal(code)))

    async def assign_codes(self, sku: str, order_id: str, quantity: int) -> list[str]:
        held = [c for c in self.state.codes if c.sku == sku and c.order_id == order_id]
        free = [c for c in self.state.codes if c.sku == sku and c.status is CodeStatus.UNASSIGNED]
        for code in free[: max(quantity - len(held), 0)]:
            code.status, code.order_id = CodeStatus.ASSIGNED, order_id
            held.append(code)
        return [c.sealed_code for c in held]

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

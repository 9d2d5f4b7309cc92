"""Where merchants, products and reservations live: the store protocol and its MongoDB implementation.

The in-memory twin for unit tests is tests/twins/inventory.py; tests/contract holds both to one suite.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.inventory.domain import (
    Changes,
    CodeStatus,
    Coupon,
    CouponChanges,
    CouponTerms,
    CouponUse,
    CouponUseStatus,
    Listing,
    Merchant,
    MerchantAction,
    MerchantQuality,
    OrderSignals,
    Product,
    QualityChange,
    QualityCounts,
    Reservation,
    ReservationStatus,
    SkuSales,
    Slot,
    SlotKey,
    StatusChange,
    Subscription,
    SubstituteSearch,
)
from shared.contracts import (
    MAX_UNITS_PER_ORDER,
    CouponDiscount,
    MerchantStatus,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ReservationEndReason,
    StockLine,
)
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite
from shared.mongo import Document, MongoStore, ServiceStore, Transaction, TransactionView
from shared.store import EventStore, UnitOfWork

MERCHANTS = "merchants"
PRODUCTS = "products"
RESERVATIONS = "reservations"
COUPONS = "coupons"  # _id: code, with its use counters
COUPON_USES = "coupon_uses"  # _id: order id, the use of a coupon that order holds or held
CODES = "codes"
SLOTS = "slots"
SUBSCRIPTIONS = "back_in_stock_subscriptions"
# Substitute candidates read per search on either side of its price: enough to fill the substitutes
# when some candidates turn out not to be on sale (a merchant not approved) or sold out in the batch.
CANDIDATES_PER_SIDE = 10


# --- merchant quality and co-purchases -----------------------------------------------------------
# Kept apart from the stock: their own collections, read and written in the consumed batch's
# transaction only when the batch holds the events they count.

ORDER_SIGNALS = "order_signals"
MERCHANT_QUALITY = "merchant_quality"
SKU_SALES = "sku_sales"
PURCHASES = "purchases"
# The most of a customer's purchased SKUs a recommendation considers (their most bought).
PURCHASES_READ = 200
# The most products of the customer's categories a category best-seller list looks among.
CATEGORY_PRODUCTS_READ = 1000


@dataclass(frozen=True)
class Purchase:
    """One confirmed order of `customer_id` holding `sku`."""

    customer_id: str
    sku: str


class SignalsTransaction(Protocol):
    async def order_signals(self, order_ids: Collection[str]) -> dict[str, OrderSignals]: ...

    async def merchant_qualities(self, merchant_ids: Collection[str]) -> dict[str, MerchantQuality]: ...

    async def save_quality(self, orders: Sequence[OrderSignals], changes: Sequence[QualityChange]) -> None:
        """Write the orders' signals as they are now; add each change's counts to its merchant's (the
        judged ones replacing the stored ones when the change restarts the judged window)."""
        ...

    async def sku_sales(self, skus: Collection[str]) -> dict[str, SkuSales]: ...

    async def save_sales(self, sales: Sequence[SkuSales], purchases: Sequence[Purchase]) -> None:
        """Write the SKUs' sales as they are now; count one more order for each purchase."""
        ...


class SignalsReads(Protocol):
    async def merchant_quality(self, merchant_id: str) -> MerchantQuality | None: ...

    async def merchant_qualities_all(self) -> list[MerchantQuality]:
        """Every merchant that has quality counts, by id."""
        ...

    async def sales(self, skus: Collection[str]) -> dict[str, SkuSales]: ...

    async def purchases(self, customer_id: str) -> dict[str, int]:
        """The SKUs the customer bought, with how many of their orders held each: at most
        PURCHASES_READ, most bought first."""
        ...

    async def best_sellers(
        self, limit: int, categories: Collection[str] | None = None
    ) -> list[tuple[str, int]]:
        """SKUs by the orders that held them, most first (then by sku), at most `limit`; with
        `categories`, only active products in stock of those categories."""
        ...

    async def listings(self, skus: Collection[str]) -> dict[str, Listing]: ...

    async def approved_merchants(self, merchant_ids: Collection[str]) -> set[str]:
        """Those of `merchant_ids` that are approved (merchants stored before vetting are)."""
        ...


class _MongoSignalsTransaction:
    tx: Transaction
    _documents: MerchantDocuments

    async def order_signals(self, order_ids: Collection[str]) -> dict[str, OrderSignals]:
        cursor = self.tx.db[ORDER_SIGNALS].find({"_id": {"$in": list(order_ids)}}, session=self.tx.session)
        return {doc["_id"]: _order_signals(doc) async for doc in cursor}

    async def merchant_qualities(self, merchant_ids: Collection[str]) -> dict[str, MerchantQuality]:
        cursor = self.tx.db[MERCHANT_QUALITY].find(
            {"_id": {"$in": list(merchant_ids)}}, session=self.tx.session
        )
        return {doc["_id"]: _merchant_quality(doc) async for doc in cursor}

    async def save_quality(self, orders: Sequence[OrderSignals], changes: Sequence[QualityChange]) -> None:
        now = datetime.now(UTC)
        session = self.tx.session
        if orders:
            await self.tx.db[ORDER_SIGNALS].bulk_write(
                [
                    ReplaceOne({"_id": o.order_id}, _order_signals_document(o, now), upsert=True)
                    for o in orders
                ],
                ordered=False,
                session=session,
            )
        if changes:
            await self.tx.db[MERCHANT_QUALITY].bulk_write(
                [_quality_update(change, now) for change in changes], ordered=False, session=session
            )

    async def sku_sales(self, skus: Collection[str]) -> dict[str, SkuSales]:
        cursor = self.tx.db[SKU_SALES].find({"_id": {"$in": list(skus)}}, session=self.tx.session)
        return {doc["_id"]: _sku_sales(doc) async for doc in cursor}

    async def save_sales(self, sales: Sequence[SkuSales], purchases: Sequence[Purchase]) -> None:
        now = datetime.now(UTC)
        session = self.tx.session
        if sales:
            await self.tx.db[SKU_SALES].bulk_write(
                [
                    UpdateOne(
                        {"_id": s.sku},
                        {
                            "$set": {
                                "orders": s.orders,
                                "bought_with": [{"sku": sku, "n": n} for sku, n in s.bought_with],
                                "updated_at": now,
                            }
                        },
                        upsert=True,
                    )
                    for s in sales
                ],
                ordered=False,
                session=session,
            )
        if purchases:
            bought: dict[tuple[str, str], int] = {}
            for purchase in purchases:
                key = (self._documents.customer_key(purchase.customer_id), purchase.sku)
                bought[key] = bought.get(key, 0) + 1
            await self.tx.db[PURCHASES].bulk_write(
                [
                    UpdateOne(
                        {"_id": f"{customer}/{sku}"},
                        {
                            "$inc": {"orders": n},
                            "$set": {"updated_at": now},
                            "$setOnInsert": {"customer": customer, "sku": sku},
                        },
                        upsert=True,
                    )
                    for (customer, sku), n in bought.items()
                ],
                ordered=False,
                session=session,
            )


class _MongoSignalsReads:
    base: MongoStore
    _documents: MerchantDocuments

    async def ensure_signal_indexes(self) -> None:
        db = self.base.db
        await db[PURCHASES].create_index([("customer", ASCENDING), ("orders", DESCENDING)])
        await db[SKU_SALES].create_index([("orders", DESCENDING), ("_id", ASCENDING)])
        await db[PRODUCTS].create_index([("category", ASCENDING), ("active", ASCENDING)])

    async def merchant_quality(self, merchant_id: str) -> MerchantQuality | None:
        doc = await self.base.db[MERCHANT_QUALITY].find_one({"_id": merchant_id})
        return None if doc is None else _merchant_quality(doc)

    async def merchant_qualities_all(self) -> list[MerchantQuality]:
        cursor = self.base.db[MERCHANT_QUALITY].find({}).sort("_id", ASCENDING)
        return [_merchant_quality(doc) async for doc in cursor]

    async def sales(self, skus: Collection[str]) -> dict[str, SkuSales]:
        cursor = self.base.db[SKU_SALES].find({"_id": {"$in": list(skus)}})
        return {doc["_id"]: _sku_sales(doc) async for doc in cursor}

    async def purchases(self, customer_id: str) -> dict[str, int]:
        cursor = (
            self.base.db[PURCHASES]
            .find({"customer": self._documents.customer_key(customer_id)})
            .sort([("orders", DESCENDING), ("sku", ASCENDING)])
            .limit(PURCHASES_READ)
        )
        return {doc["sku"]: int(doc["orders"]) async for doc in cursor}

    async def best_sellers(
        self, limit: int, categories: Collection[str] | None = None
    ) -> list[tuple[str, int]]:
        query: Document = {}
        if categories is not None:
            products = (
                self.base.db[PRODUCTS]
                .find(
                    {"category": {"$in": list(categories)}, "active": True, "available": {"$gt": 0}},
                    {"_id": 1},
                )
                .limit(CATEGORY_PRODUCTS_READ)
            )
            query = {"_id": {"$in": [doc["_id"] async for doc in products]}}
        cursor = (
            self.base.db[SKU_SALES]
            .find(query)
            .sort([("orders", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [(doc["_id"], int(doc["orders"])) async for doc in cursor]

    async def listings(self, skus: Collection[str]) -> dict[str, Listing]:
        cursor = self.base.db[PRODUCTS].find({"_id": {"$in": list(skus)}})
        return {doc["_id"]: _listing(doc) async for doc in cursor}

    async def approved_merchants(self, merchant_ids: Collection[str]) -> set[str]:
        cursor = self.base.db[MERCHANTS].find(
            {
                "_id": {"$in": list(merchant_ids)},
                # Merchants stored before vetting have no status and read as approved.
                "status": {"$in": [MerchantStatus.APPROVED.value, None]},
            },
            {"_id": 1},
        )
        return {doc["_id"] async for doc in cursor}


def _counts(doc: Document | None) -> QualityCounts:
    doc = doc or {}
    return QualityCounts(
        orders=int(doc.get("orders", 0)),
        refunded=int(doc.get("refunded", 0)),
        complaints=int(doc.get("complaints", 0)),
        rating_sum=int(doc.get("rating_sum", 0)),
        reviews=int(doc.get("reviews", 0)),
    )


def _counts_fields(counts: QualityCounts) -> dict[str, int]:
    return {
        "orders": counts.orders,
        "refunded": counts.refunded,
        "complaints": counts.complaints,
        "rating_sum": counts.rating_sum,
        "reviews": counts.reviews,
    }


def _quality_update(change: QualityChange, now: datetime) -> UpdateOne:
    increments = {f"total.{name}": n for name, n in _counts_fields(change.total).items()}
    update: Document = {"$set": {"updated_at": now}}
    if change.restart_judged_at is None:
        increments |= {f"judged.{name}": n for name, n in _counts_fields(change.judged).items()}
    else:
        update["$set"] |= {"judged": _counts_fields(change.judged), "judged_since": change.restart_judged_at}
    update["$inc"] = increments
    return UpdateOne({"_id": change.merchant_id}, update, upsert=True)


def _merchant_quality(doc: Document) -> MerchantQuality:
    return MerchantQuality(
        merchant_id=doc["_id"],
        total=_counts(doc.get("total")),
        judged=_counts(doc.get("judged")),
        judged_since=doc.get("judged_since"),
    )


def _order_signals_document(signals: OrderSignals, now: datetime) -> Document:
    return {
        "merchants": list(signals.merchants),
        "confirmed_at": signals.confirmed_at,
        "refunded": signals.refunded,
        "cases": sorted(signals.cases),
        "reviewed": sorted(signals.reviewed),
        "updated_at": now,
    }


def _order_signals(doc: Document) -> OrderSignals:
    return OrderSignals(
        order_id=doc["_id"],
        merchants=tuple(doc["merchants"]),
        confirmed_at=doc["confirmed_at"],
        refunded=bool(doc.get("refunded", False)),
        cases=frozenset(doc.get("cases", [])),
        reviewed=frozenset(doc.get("reviewed", [])),
    )


def _sku_sales(doc: Document) -> SkuSales:
    return SkuSales(
        sku=doc["_id"],
        orders=int(doc.get("orders", 0)),
        bought_with=tuple((entry["sku"], int(entry["n"])) for entry in doc.get("bought_with", [])),
    )


def _listing(doc: Document) -> Listing:
    return Listing(
        sku=doc["_id"],
        name=doc["name"],
        merchant_id=doc["merchant_id"],
        price_fen=int(doc["price_fen"]),
        currency=doc.get("currency", "CNY"),
        # Products stored before categories existed have none.
        category=doc.get("category") or "",
        active=bool(doc.get("active", True)),
        available=int(doc.get("available", 0)),
    )


class StockConflict(ConcurrentWrite):
    """Stock or a reservation changed since the batch read it (another replica); retry the batch."""


class CodeConflict(ConcurrentWrite):
    """A code being added was added to the pool meanwhile; retried, the upload finds it and is refused."""


class StockTransaction(UnitOfWork, SignalsTransaction, Protocol):
    """One atomic unit: reads see a consistent view, writes commit with the applied ids and outbox."""

    async def products(self, skus: Collection[str]) -> dict[str, Product]: ...

    async def substitute_candidates(
        self, searches: Collection[SubstituteSearch], exclude: Collection[str]
    ) -> list[Product]:
        """Active products in stock outside `exclude` that a search matches (its category, or its
        merchant for a search without one): for each search the CANDIDATES_PER_SIDE nearest its price
        from above (price at least its own) and as many from below, nearest first, ties to more stock
        then to the sku. Each product once, by sku."""
        ...

    async def subscriptions(self, sku: str) -> list[Subscription]:
        """The customers waiting for `sku` to be back in stock, by customer id."""
        ...

    async def subscribe(self, subscription: Subscription) -> bool:
        """Record the subscription unless its customer has one to that product already (False).
        Touches the product, so a restock deciding on the subscriptions concurrently conflicts
        and is decided again with this one."""
        ...

    async def unsubscribe(self, sku: str, customer_id: str) -> bool:
        """Remove the customer's subscription to `sku`; False when there was none."""
        ...

    async def end_subscriptions(self, subscriptions: Collection[Subscription]) -> None:
        """Remove these subscriptions (used up by the BackInStock that names them), if still there."""
        ...

    async def mark_low_stock(self, notified: Mapping[str, bool]) -> None:
        """Set each product's `low_stock_notified`."""
        ...

    async def reservations(self, order_ids: Collection[str]) -> dict[str, Reservation]: ...

    async def expired_reservations(self, now: datetime, limit: int) -> dict[str, Reservation]:
        """Reservations still held at or past their deadline, the longest overdue first."""
        ...

    async def merchant(self, merchant_id: str) -> Merchant | None: ...

    async def merchants(self, merchant_ids: Collection[str]) -> dict[str, Merchant]:
        """The merchants found among `merchant_ids`, by id."""
        ...

    async def put_merchant(self, merchant: Merchant) -> None:
        """Create or replace a merchant, its status and history included."""
        ...

    async def products_of(self, merchant_id: str) -> list[Product]:
        """Every product of the merchant, by sku."""
        ...

    async def save(self, changes: Changes) -> None:
        """Add the stock deltas, insert the new reservations, move on those still held and those
        still released because they expired.

        Raises StockConflict when stock would go below zero, a new reservation exists already or a
        moved one is no longer as it was read: the batch was decided on state that has since changed."""
        ...

    async def put_product(self, product: Product) -> Product:
        """Create a product with its `available` (nothing reserved), or change an existing one's details
        and keep its stored stock, whatever `product` says: only `save` moves stock. Returns it as stored."""
        ...

    # --- coupons ---

    async def coupons(self, codes: Collection[str]) -> dict[str, Coupon]:
        """The coupons found among `codes`, with their use counters."""
        ...

    async def coupon_uses(self, order_ids: Collection[str]) -> dict[str, CouponUse]:
        """The coupon uses the orders hold or held, by order id."""
        ...

    async def redeemed(self, claims: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (code, customer id) pairs whose customer holds or used that coupon, as a
        once-per-customer coupon."""
        ...

    async def put_coupon(self, coupon: Coupon, read: Coupon | None) -> Coupon:
        """Create a coupon (`read` None) with all its uses left, or store new terms over `read`, the
        coupon as the change was decided on: the uses left move by the change in total uses, its
        held and used uses stay as stored. Returns it as stored.

        Raises StockConflict when the coupon exists already (a creation) or its total changed since it
        was read, or fewer uses are left than the change takes away: decide again on fresh state."""
        ...

    async def slots(self, keys: Collection[SlotKey]) -> dict[SlotKey, Slot]:
        """The slots found among `keys`, by key."""
        ...

    async def slots_of(self, skus: Collection[str]) -> list[Slot]:
        """Every slot of the products, past ones too: by sku, then start, then slot id."""
        ...

    async def put_slot(self, slot: Slot, expected: Slot | None) -> None:
        """Create `slot` (`expected` None) or replace the slot as `expected` read it, seats included.

        Raises StockConflict when the slot exists already, or no longer is as `expected` read it (a
        booking came meanwhile): the change was decided on a stale read."""
        ...

    async def remove_slot(self, expected: Slot) -> None:
        """Delete the slot if it still is as `expected` read it; StockConflict otherwise."""
        ...

    # --- virtual goods: the codes of a product's pool, sealed; found by their blind index only ---

    async def pooled_codes(self, sku: str, codes: Collection[str]) -> set[str]:
        """Which of `codes` the product's pool holds already, assigned or not."""
        ...

    async def add_codes(self, sku: str, codes: Sequence[str]) -> None:
        """Add unassigned codes to the product's pool, sealed. Raises CodeConflict when one is in the
        pool already (an upload written meanwhile): nothing of the transaction is kept."""
        ...

    async def assign_codes(self, sku: str, order_id: str, quantity: int) -> list[str]:
        """Give the order `quantity` codes of the product's pool, each taken only if still unassigned,
        and return the codes the order holds of it, as stored (sealed). Codes assigned to the order
        before count towards `quantity`, so a repeat assigns nothing again; a pool short of codes
        gives what it has. Raises StockConflict when a code was taken meanwhile (another replica)."""
        ...


class InventoryStore(EventStore[StockTransaction], SignalsReads, Protocol):
    async def list_products(self, merchant_id: str | None = None) -> list[Product]: ...

    async def get_product(self, sku: str) -> Product | None: ...

    async def get_merchant(self, merchant_id: str) -> Merchant | None: ...

    async def list_merchants(self, status: MerchantStatus | None = None) -> list[Merchant]:
        """Every merchant by id, or those with `status`."""
        ...

    async def get_coupon(self, code: str) -> Coupon | None: ...

    async def list_coupons(self, merchant_id: str | None = None) -> list[Coupon]:
        """Every coupon by code, or one merchant's."""
        ...

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        """Every slot of the products, past ones too: by sku, then start, then slot id."""
        ...


# --- MongoDB ---------------------------------------------------------------------------------


class MongoInventoryStore(ServiceStore["_MongoTransaction"], _MongoSignalsReads):
    """Merchants' contacts are sealed at rest with `personal`."""

    def __init__(self, store: MongoStore, personal: PersonalData) -> None:
        self._documents = MerchantDocuments(personal)
        self._coupon_documents = CouponDocuments(personal)
        super().__init__(
            store, lambda tx: _MongoTransaction(tx, self._documents, self._coupon_documents, personal)
        )
        self._merchants = store.db[MERCHANTS]
        self._products = store.db[PRODUCTS]
        self._reservations = store.db[RESERVATIONS]
        self._coupons = store.db[COUPONS]
        self._coupon_uses = store.db[COUPON_USES]
        self._codes = store.db[CODES]
        self._subscriptions = store.db[SUBSCRIPTIONS]
        self._slots = store.db[SLOTS]

    async def ensure_indexes(self) -> None:
        await self._products.create_index([("merchant_id", ASCENDING), ("available", DESCENDING)])
        # Substitutes: a category's (or a merchant's) products nearest a price.
        await self._products.create_index([("category", ASCENDING), ("price_fen", ASCENDING)])
        await self._products.create_index([("merchant_id", ASCENDING), ("price_fen", ASCENDING)])
        await self._subscriptions.create_index([("sku", ASCENDING), ("customer_id", ASCENDING)], unique=True)
        await self._reservations.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])
        await self._merchants.create_index([("status", ASCENDING), ("_id", ASCENDING)])
        await self._coupons.create_index([("merchant_id", ASCENDING), ("_id", ASCENDING)])
        # A customer holds or used a once-per-customer coupon once: concurrent batches or replicas
        # that both decided to give them a use collide here, and the loser decides again.
        await self._coupon_uses.create_index(
            [("once_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"once_key": {"$type": "string"}},
        )
        # A code is in a product's pool once: its blind index is unique per product. Per product,
        # not across products, so an upload cannot learn that another merchant holds a code.
        await self._codes.create_index([("sku", ASCENDING), ("index", ASCENDING)], unique=True)
        await self._codes.create_index([("sku", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)])
        await self._codes.create_index([("order_id", ASCENDING), ("sku", ASCENDING)])
        await self.ensure_signal_indexes()
        await self._slots.create_index(SLOT_ORDER)

    async def list_products(self, merchant_id: str | None = None) -> list[Product]:
        query = {} if merchant_id is None else {"merchant_id": merchant_id}
        return [_product(doc) async for doc in self._products.find(query).sort("_id", ASCENDING)]

    async def get_product(self, sku: str) -> Product | None:
        doc = await self._products.find_one({"_id": sku})
        return None if doc is None else _product(doc)

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        doc = await self._merchants.find_one({"_id": merchant_id})
        return None if doc is None else self._documents.merchant(doc)

    async def list_merchants(self, status: MerchantStatus | None = None) -> list[Merchant]:
        query: Document = {}
        if status is MerchantStatus.APPROVED:
            # Merchants stored before vetting have no status and read as approved.
            query = {"status": {"$in": [status.value, None]}}
        elif status is not None:
            query = {"status": status.value}
        cursor = self._merchants.find(query).sort("_id", ASCENDING)
        return [self._documents.merchant(doc) async for doc in cursor]

    async def get_coupon(self, code: str) -> Coupon | None:
        doc = await self._coupons.find_one({"_id": code})
        return None if doc is None else _coupon(doc)

    async def list_coupons(self, merchant_id: str | None = None) -> list[Coupon]:
        query = {} if merchant_id is None else {"merchant_id": merchant_id}
        return [_coupon(doc) async for doc in self._coupons.find(query).sort("_id", ASCENDING)]

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        cursor = self._slots.find({"sku": {"$in": list(skus)}}).sort(SLOT_ORDER)
        return [_slot(doc) async for doc in cursor]


@dataclass
class _MongoTransaction(TransactionView, _MongoSignalsTransaction):
    _documents: MerchantDocuments
    _coupon_documents: CouponDocuments
    _personal: PersonalData

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        cursor = self.tx.db[PRODUCTS].find({"_id": {"$in": list(skus)}}, session=self.tx.session)
        return {doc["_id"]: _product(doc) async for doc in cursor}

    async def substitute_candidates(
        self, searches: Collection[SubstituteSearch], exclude: Collection[str]
    ) -> list[Product]:
        found: dict[str, Product] = {}
        for search in searches:
            shelf: Document = (
                {"category": search.category} if search.category else {"merchant_id": search.merchant_id}
            )
            on_sale: Document = {
                **shelf,
                "active": True,
                "available": {"$gt": 0},
                "_id": {"$nin": list(exclude)},
            }
            for price, order in (
                ({"$gte": search.price_fen}, ASCENDING),
                ({"$lt": search.price_fen}, DESCENDING),
            ):
                cursor = (
                    self.tx.db[PRODUCTS]
                    .find({**on_sale, "price_fen": price}, session=self.tx.session)
                    .sort([("price_fen", order), ("available", DESCENDING), ("_id", ASCENDING)])
                    .limit(CANDIDATES_PER_SIDE)
                )
                found.update({doc["_id"]: _product(doc) async for doc in cursor})
        return [found[sku] for sku in sorted(found)]

    async def subscriptions(self, sku: str) -> list[Subscription]:
        cursor = (
            self.tx.db[SUBSCRIPTIONS]
            .find({"sku": sku}, session=self.tx.session)
            .sort("customer_id", ASCENDING)
        )
        return [Subscription(doc["sku"], doc["customer_id"], doc["_id"]) async for doc in cursor]

    async def subscribe(self, subscription: Subscription) -> bool:
        now = datetime.now(UTC)
        session = self.tx.session
        await self.tx.db[PRODUCTS].update_one(
            {"_id": subscription.sku}, {"$set": {"subscriptions_changed_at": now}}, session=session
        )
        result = await self.tx.db[SUBSCRIPTIONS].update_one(
            {"sku": subscription.sku, "customer_id": subscription.customer_id},
            {"$setOnInsert": {"_id": subscription.subscription_id, "created_at": now}},
            upsert=True,
            session=session,
        )
        return result.upserted_id is not None

    async def unsubscribe(self, sku: str, customer_id: str) -> bool:
        result = await self.tx.db[SUBSCRIPTIONS].delete_one(
            {"sku": sku, "customer_id": customer_id}, session=self.tx.session
        )
        return result.deleted_count > 0

    async def end_subscriptions(self, subscriptions: Collection[Subscription]) -> None:
        if subscriptions:
            await self.tx.db[SUBSCRIPTIONS].delete_many(
                {"_id": {"$in": [s.subscription_id for s in subscriptions]}}, session=self.tx.session
            )

    async def mark_low_stock(self, notified: Mapping[str, bool]) -> None:
        if notified:
            await self.tx.db[PRODUCTS].bulk_write(
                [
                    UpdateOne({"_id": sku}, {"$set": {"low_stock_notified": flag}})
                    for sku, flag in notified.items()
                ],
                ordered=False,
                session=self.tx.session,
            )

    async def reservations(self, order_ids: Collection[str]) -> dict[str, Reservation]:
        cursor = self.tx.db[RESERVATIONS].find({"_id": {"$in": list(order_ids)}}, session=self.tx.session)
        return {doc["_id"]: _reservation(doc) async for doc in cursor}

    async def expired_reservations(self, now: datetime, limit: int) -> dict[str, Reservation]:
        cursor = (
            self.tx.db[RESERVATIONS]
            .find(
                {"status": ReservationStatus.HELD.value, "expires_at": {"$lte": now}},
                session=self.tx.session,
            )
            .sort("expires_at", ASCENDING)
            .limit(limit)
        )
        return {doc["_id"]: _reservation(doc) async for doc in cursor}

    async def merchant(self, merchant_id: str) -> Merchant | None:
        doc = await self.tx.db[MERCHANTS].find_one({"_id": merchant_id}, session=self.tx.session)
        return None if doc is None else self._documents.merchant(doc)

    async def merchants(self, merchant_ids: Collection[str]) -> dict[str, Merchant]:
        cursor = self.tx.db[MERCHANTS].find({"_id": {"$in": list(merchant_ids)}}, session=self.tx.session)
        return {doc["_id"]: self._documents.merchant(doc) async for doc in cursor}

    async def put_merchant(self, merchant: Merchant) -> None:
        now = datetime.now(UTC)
        await self.tx.db[MERCHANTS].update_one(
            {"_id": merchant.merchant_id},
            {
                "$set": {**self._documents.merchant_fields(merchant), "updated_at": now},
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
            session=self.tx.session,
        )

    async def products_of(self, merchant_id: str) -> list[Product]:
        cursor = (
            self.tx.db[PRODUCTS]
            .find({"merchant_id": merchant_id}, session=self.tx.session)
            .sort("_id", ASCENDING)
        )
        return [_product(doc) async for doc in cursor]

    async def save(self, changes: Changes) -> None:
        now = datetime.now(UTC)
        session = self.tx.session
        stock_ops = [
            _stock_update(sku, delta.available, delta.reserved, now) for sku, delta in changes.stock.items()
        ]
        if stock_ops:
            result = await self.tx.db[PRODUCTS].bulk_write(stock_ops, ordered=False, session=session)
            if result.matched_count != len(stock_ops):
                raise StockConflict(f"{len(stock_ops) - result.matched_count} stock update(s) lost a race")
        seat_ops = [
            _stock_update(_slot_id(key), delta.available, delta.reserved, now)
            for key, delta in changes.slots.items()
        ]
        if seat_ops:
            result = await self.tx.db[SLOTS].bulk_write(seat_ops, ordered=False, session=session)
            if result.matched_count != len(seat_ops):
                raise StockConflict(f"{len(seat_ops) - result.matched_count} slot update(s) lost a race")
        reservation_ops: list[InsertOne[Document] | UpdateOne] = [
            InsertOne(_reservation_document(r, now)) for r in changes.created
        ]
        moves = [
            UpdateOne(
                {"_id": r.order_id, "status": ReservationStatus.HELD.value},
                {"$set": {"status": r.status.value, "reason": r.reason, "updated_at": now}},
            )
            for r in changes.moved_from_held
        ]
        moves += [
            UpdateOne(
                {
                    "_id": r.order_id,
                    "status": ReservationStatus.RELEASED.value,
                    "reason": ReservationEndReason.EXPIRED.value,
                },
                {
                    "$set": {
                        "lines": [line.model_dump() for line in r.lines],
                        "status": r.status.value,
                        "reason": r.reason,
                        "updated_at": now,
                    }
                },
            )
            for r in changes.moved_from_expired
        ]
        if reservation_ops or moves:
            try:
                result = await self.tx.db[RESERVATIONS].bulk_write(
                    [*reservation_ops, *moves], ordered=False, session=session
                )
            except BulkWriteError as error:
                raise StockConflict(f"reservation written concurrently: {error}") from error
            if result.matched_count != len(moves):
                raise StockConflict(f"{len(moves) - result.matched_count} reservation(s) already moved on")
        await self._save_coupons(changes.coupons, now)

    async def put_product(self, product: Product) -> Product:
        now = datetime.now(UTC)
        doc = await self.tx.db[PRODUCTS].find_one_and_update(
            {"_id": product.sku},
            {
                "$set": {
                    "name": product.name,
                    "merchant_id": product.merchant_id,
                    "price_fen": product.price_fen,
                    "currency": product.currency,
                    "kind": product.kind.value,
                    "active": product.active,
                    "max_per_order": product.max_per_order,
                    "price_tiers": [tier.model_dump() for tier in product.price_tiers],
                    "description": product.description,
                    "category": product.category,
                    "attributes": dict(product.attributes),
                    "payment_methods": [m.value for m in PaymentMethod if m in product.payment_methods],
                    "low_stock_threshold": product.low_stock_threshold,
                    "updated_at": now,
                },
                # Stock is set once, at creation; after that only `save`'s guarded increments move
                # it, so an edit cannot overwrite what the order consumer reserved meanwhile.
                "$setOnInsert": {
                    "available": product.available,
                    "reserved": 0,
                    "low_stock_notified": False,
                    "created_at": now,
                },
            },
            upsert=True,
            return_document=True,
            session=self.tx.session,
        )
        if doc is None:  # cannot happen with upsert + return_document; keeps the type honest
            raise StockConflict(f"product {product.sku} vanished while being written")
        return _product(doc)

    # --- coupons ---

    async def coupons(self, codes: Collection[str]) -> dict[str, Coupon]:
        cursor = self.tx.db[COUPONS].find({"_id": {"$in": list(codes)}}, session=self.tx.session)
        return {doc["_id"]: _coupon(doc) async for doc in cursor}

    async def coupon_uses(self, order_ids: Collection[str]) -> dict[str, CouponUse]:
        cursor = self.tx.db[COUPON_USES].find({"_id": {"$in": list(order_ids)}}, session=self.tx.session)
        return {doc["_id"]: self._coupon_documents.use(doc) async for doc in cursor}

    async def redeemed(self, claims: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        by_key = {
            self._coupon_documents.once_key(code, customer): (code, customer) for code, customer in claims
        }
        cursor = self.tx.db[COUPON_USES].find(
            {"once_key": {"$in": list(by_key)}}, {"once_key": 1}, session=self.tx.session
        )
        return {by_key[doc["once_key"]] async for doc in cursor}

    async def put_coupon(self, coupon: Coupon, read: Coupon | None) -> Coupon:
        now = datetime.now(UTC)
        coupons = self.tx.db[COUPONS]
        if read is None:
            document = {
                "_id": coupon.code,
                **_coupon_terms(coupon.terms),
                "left": coupon.terms.total_uses,
                "held": 0,
                "used": 0,
                "created_at": now,
                "updated_at": now,
            }
            try:
                await coupons.insert_one(document, session=self.tx.session)
            except DuplicateKeyError as error:
                raise StockConflict(f"coupon {coupon.code} was created concurrently") from error
            return _coupon(document)
        more = coupon.terms.total_uses - read.terms.total_uses
        # The same guard as stock's: a change decided on a stale total or count fails loudly.
        query: Document = {"_id": coupon.code, "total_uses": read.terms.total_uses}
        if more < 0:
            query["left"] = {"$gte": -more}
        doc = await coupons.find_one_and_update(
            query,
            {"$set": {**_coupon_terms(coupon.terms), "updated_at": now}, "$inc": {"left": more}},
            return_document=True,
            session=self.tx.session,
        )
        if doc is None:
            raise StockConflict(f"coupon {coupon.code} changed since it was read")
        return _coupon(doc)

    async def _save_coupons(self, changes: CouponChanges, now: datetime) -> None:
        session = self.tx.session
        count_ops = [
            _coupon_count_update(code, delta.left, delta.held, delta.used, now)
            for code, delta in changes.counts.items()
        ]
        if count_ops:
            result = await self.tx.db[COUPONS].bulk_write(count_ops, ordered=False, session=session)
            if result.matched_count != len(count_ops):
                raise StockConflict(f"{len(count_ops) - result.matched_count} coupon count(s) lost a race")
        documents = self._coupon_documents
        use_ops: list[InsertOne[Document] | UpdateOne] = [
            InsertOne(documents.new_use(use, now)) for use in changes.created
        ]
        moves = [
            UpdateOne({"_id": move.use.order_id, "status": move.was.value}, documents.move(move.use, now))
            for move in changes.moved
        ]
        if not use_ops and not moves:
            return
        try:
            result = await self.tx.db[COUPON_USES].bulk_write(
                [*use_ops, *moves], ordered=False, session=session
            )
        except BulkWriteError as error:
            # Another batch gave this order, or this customer, a use meanwhile.
            raise StockConflict(f"coupon use written concurrently: {error}") from error
        if result.matched_count != len(moves):
            raise StockConflict(f"{len(moves) - result.matched_count} coupon use(s) already moved on")

    # --- virtual goods ---------------------------------------------------------------------------

    async def pooled_codes(self, sku: str, codes: Collection[str]) -> set[str]:
        by_index = {self._personal.blind_index(code): code for code in codes}
        cursor = self.tx.db[CODES].find(
            {"sku": sku, "index": {"$in": list(by_index)}}, {"index": 1}, session=self.tx.session
        )
        return {by_index[doc["index"]] async for doc in cursor}

    async def add_codes(self, sku: str, codes: Sequence[str]) -> None:
        if not codes:
            return
        now = datetime.now(UTC)
        documents = [
            {
                "_id": str(ObjectId()),
                "sku": sku,
                "index": self._personal.blind_index(code),
                "sealed_code": self._personal.seal(code),
                "status": CodeStatus.UNASSIGNED.value,
                "order_id": None,
                "added_at": now,
            }
            for code in codes
        ]
        try:
            await self.tx.db[CODES].insert_many(documents, session=self.tx.session)
        except (DuplicateKeyError, BulkWriteError) as error:
            # The error names the index entry, not the code: the blind index says nothing of it.
            raise CodeConflict(f"a code of {sku} was added to its pool meanwhile") from error

    async def assign_codes(self, sku: str, order_id: str, quantity: int) -> list[str]:
        codes = self.tx.db[CODES]
        session = self.tx.session
        held = [
            doc["sealed_code"]
            async for doc in codes.find({"sku": sku, "order_id": order_id}, session=session).sort("_id")
        ]
        wanted = quantity - len(held)
        if wanted <= 0:
            return held
        picked = [
            doc
            async for doc in codes.find({"sku": sku, "status": CodeStatus.UNASSIGNED.value}, session=session)
            .sort("_id", ASCENDING)
            .limit(wanted)
        ]
        if not picked:
            return held
        now = datetime.now(UTC)
        # Guarded: a code some other batch assigned since it was read is not taken a second time.
        result = await codes.bulk_write(
            [
                UpdateOne(
                    {"_id": doc["_id"], "status": CodeStatus.UNASSIGNED.value},
                    {
                        "$set": {
                            "status": CodeStatus.ASSIGNED.value,
                            "order_id": order_id,
                            "assigned_at": now,
                        }
                    },
                )
                for doc in picked
            ],
            ordered=False,
            session=session,
        )
        if result.modified_count != len(picked):
            raise StockConflict(f"{len(picked) - result.modified_count} code(s) of {sku} taken meanwhile")
        return held + [doc["sealed_code"] for doc in picked]

    async def slots(self, keys: Collection[SlotKey]) -> dict[SlotKey, Slot]:
        cursor = self.tx.db[SLOTS].find(
            {"_id": {"$in": [_slot_id(k) for k in keys]}}, session=self.tx.session
        )
        return {(doc["sku"], doc["slot_id"]): _slot(doc) async for doc in cursor}

    async def slots_of(self, skus: Collection[str]) -> list[Slot]:
        cursor = (
            self.tx.db[SLOTS].find({"sku": {"$in": list(skus)}}, session=self.tx.session).sort(SLOT_ORDER)
        )
        return [_slot(doc) async for doc in cursor]

    async def put_slot(self, slot: Slot, expected: Slot | None) -> None:
        now = datetime.now(UTC)
        slots = self.tx.db[SLOTS]
        fields = {
            "sku": slot.sku,
            "slot_id": slot.slot_id,
            "starts_at": slot.starts_at,
            "ends_at": slot.ends_at,
            "capacity": slot.capacity,
            "available": slot.available,
            "reserved": slot.reserved,
            "updated_at": now,
        }
        if expected is None:
            try:
                await slots.insert_one(
                    {"_id": _slot_id(slot.key), **fields, "created_at": now}, session=self.tx.session
                )
            except DuplicateKeyError as error:
                raise StockConflict(f"slot {slot.slot_id} of {slot.sku} was created concurrently") from error
            return
        # Compare-and-set on the seats read: a booking that landed since makes this decide again.
        result = await slots.update_one(_as_read(expected), {"$set": fields}, session=self.tx.session)
        if result.matched_count != 1:
            raise StockConflict(f"slot {slot.slot_id} of {slot.sku} changed while being written")

    async def remove_slot(self, expected: Slot) -> None:
        result = await self.tx.db[SLOTS].delete_one(_as_read(expected), session=self.tx.session)
        if result.deleted_count != 1:
            raise StockConflict(f"slot {expected.slot_id} of {expected.sku} changed while being removed")


def _stock_update(sku: str, available: int, reserved: int, now: datetime) -> UpdateOne:
    # The guards make a decision taken on stale stock fail loudly instead of overselling.
    query: Document = {"_id": sku}
    if available < 0:
        query["available"] = {"$gte": -available}
    if reserved < 0:
        query["reserved"] = {"$gte": -reserved}
    return UpdateOne(
        query, {"$inc": {"available": available, "reserved": reserved}, "$set": {"updated_at": now}}
    )


def _coupon_count_update(code: str, left: int, held: int, used: int, now: datetime) -> UpdateOne:
    # As stock's guards: a use handed out on a stale count fails the batch instead of going beyond
    # the coupon's total.
    query: Document = {"_id": code}
    if left < 0:
        query["left"] = {"$gte": -left}
    if held < 0:
        query["held"] = {"$gte": -held}
    return UpdateOne(query, {"$inc": {"left": left, "held": held, "used": used}, "$set": {"updated_at": now}})


def _coupon_terms(terms: CouponTerms) -> Document:
    return {
        "merchant_id": terms.merchant_id,
        "discount": terms.discount.value,
        "value": terms.value,
        "min_spend_fen": terms.min_spend_fen,
        "valid_from": terms.valid_from,
        "valid_until": terms.valid_until,
        "total_uses": terms.total_uses,
        "once_per_customer": terms.once_per_customer,
        "active": terms.active,
    }


def _coupon(doc: Document) -> Coupon:
    return Coupon(
        code=doc["_id"],
        terms=CouponTerms(
            merchant_id=doc["merchant_id"],
            discount=CouponDiscount(doc["discount"]),
            value=int(doc["value"]),
            min_spend_fen=int(doc["min_spend_fen"]),
            valid_from=doc["valid_from"],
            valid_until=doc["valid_until"],
            total_uses=int(doc["total_uses"]),
            once_per_customer=bool(doc["once_per_customer"]),
            active=bool(doc["active"]),
        ),
        left=int(doc["left"]),
        held=int(doc["held"]),
        used=int(doc["used"]),
    )


class CouponDocuments:
    """Coupon uses as documents: the customer is personal data, stored sealed, and found by a blind
    index (`once_key`, present while the use keeps its customer from a once-per-customer coupon)."""

    def __init__(self, personal: PersonalData) -> None:
        self._personal = personal

    def once_key(self, code: str, customer_id: str) -> str:
        return f"{code}|{self._personal.blind_index(customer_id)}"

    def new_use(self, use: CouponUse, now: datetime) -> Document:
        document: Document = {
            "_id": use.order_id,
            "code": use.code,
            "sealed_customer": self._personal.seal(use.customer_id),
            "once_per_customer": use.once_per_customer,
            "status": use.status.value,
            "reason": use.reason,
            "created_at": now,
            "updated_at": now,
        }
        if use.redemption is not None:
            document["once_key"] = self.once_key(use.code, use.customer_id)
        return document

    def move(self, use: CouponUse, now: datetime) -> Document:
        changed = {"status": use.status.value, "reason": use.reason, "updated_at": now}
        if use.redemption is None:
            return {"$set": changed, "$unset": {"once_key": ""}}
        return {"$set": {**changed, "once_key": self.once_key(use.code, use.customer_id)}}

    def use(self, doc: Document) -> CouponUse:
        return CouponUse(
            order_id=doc["_id"],
            code=doc["code"],
            customer_id=self._personal.open(doc["sealed_customer"]),
            once_per_customer=bool(doc["once_per_customer"]),
            status=CouponUseStatus(doc["status"]),
            reason=doc.get("reason", ""),
        )


SLOT_ORDER = [("sku", ASCENDING), ("starts_at", ASCENDING), ("slot_id", ASCENDING)]


def _slot_id(key: SlotKey) -> str:
    # Skus and slot ids never hold a "/" (the API's identifiers), so the pair names one document.
    sku, slot_id = key
    return f"{sku}/{slot_id}"


def _as_read(slot: Slot) -> Document:
    return {
        "_id": _slot_id(slot.key),
        "capacity": slot.capacity,
        "available": slot.available,
        "reserved": slot.reserved,
    }


def _slot(doc: Document) -> Slot:
    return Slot(
        sku=doc["sku"],
        slot_id=doc["slot_id"],
        starts_at=doc["starts_at"],
        ends_at=doc["ends_at"],
        capacity=int(doc["capacity"]),
        available=int(doc["available"]),
        reserved=int(doc["reserved"]),
    )


def _product(doc: Document) -> Product:
    return Product(
        sku=doc["_id"],
        name=doc["name"],
        merchant_id=doc["merchant_id"],
        price_fen=int(doc["price_fen"]),
        available=int(doc.get("available", 0)),
        reserved=int(doc.get("reserved", 0)),
        kind=ProductKind(doc.get("kind", ProductKind.PHYSICAL.value)),
        active=bool(doc.get("active", True)),
        currency=doc.get("currency", "CNY"),
        max_per_order=int(doc.get("max_per_order", MAX_UNITS_PER_ORDER)),
        # Products stored before tiers existed have a single price.
        price_tiers=tuple(PriceTier.model_validate(tier) for tier in doc.get("price_tiers", [])),
        # Products stored before these details existed have none: every method their merchant takes.
        description=doc.get("description", ""),
        category=doc.get("category", ""),
        attributes=dict(doc.get("attributes") or {}),
        payment_methods=frozenset(PaymentMethod(m) for m in doc.get("payment_methods") or ()),
        low_stock_threshold=doc.get("low_stock_threshold"),
        low_stock_notified=bool(doc.get("low_stock_notified", False)),
    )


class MerchantDocuments:
    """Merchants as MongoDB documents; the contact is personal data and is stored sealed."""

    def __init__(self, personal: PersonalData) -> None:
        self._personal = personal

    def merchant_fields(self, merchant: Merchant) -> Document:
        return {
            "name": merchant.name,
            "payment_methods": [method.value for method in merchant.accepted_methods],
            "status": merchant.status.value,
            "reason": merchant.reason,
            "webhook_url": merchant.webhook_url,
            "licence_number": merchant.licence_number,
            "sealed_contact": None if merchant.contact is None else self._personal.seal(merchant.contact),
            "history": [
                {
                    "action": entry.action.value,
                    "status": entry.status.value,
                    "at": entry.at,
                    "by": entry.by,
                    "reason": entry.reason,
                }
                for entry in merchant.history
            ],
        }

    def customer_key(self, customer_id: str) -> str:
        """Customers' purchases are found by a blind index of the id: an id may be a phone or e-mail."""
        return self._personal.blind_index(customer_id)

    def merchant(self, doc: Document) -> Merchant:
        # Merchants stored before payment methods existed accept every method, as they did then;
        # those stored before vetting read as approved, with no history.
        methods = doc.get("payment_methods")
        sealed_contact = doc.get("sealed_contact")
        return Merchant(
            merchant_id=doc["_id"],
            name=doc["name"],
            payment_methods=frozenset(PaymentMethod)
            if methods is None
            else frozenset(map(PaymentMethod, methods)),
            status=MerchantStatus(doc.get("status") or MerchantStatus.APPROVED.value),
            reason=doc.get("reason", ""),
            webhook_url=doc.get("webhook_url"),
            licence_number=doc.get("licence_number"),
            contact=None if sealed_contact is None else self._personal.open(sealed_contact),
            history=tuple(
                StatusChange(
                    action=MerchantAction(entry["action"]),
                    status=MerchantStatus(entry["status"]),
                    at=entry["at"],
                    by=entry["by"],
                    reason=entry.get("reason", ""),
                )
                for entry in doc.get("history", [])
            ),
        )


def _reservation(doc: Document) -> Reservation:
    return Reservation(
        order_id=doc["_id"],
        lines=[
            StockLine(sku=line["sku"], quantity=line["quantity"], slot_id=line.get("slot_id"))
            for line in doc["lines"]
        ],
        status=ReservationStatus(doc["status"]),
        correlation_id=str(doc.get("correlation_id") or doc["_id"]),
        expires_at=doc.get("expires_at"),
        reason=doc.get("reason", ""),
        coupon=doc.get("coupon"),
    )


def _reservation_document(reservation: Reservation, now: datetime) -> Document:
    return {
        "_id": reservation.order_id,
        "lines": [line.model_dump() for line in reservation.lines],
        "status": reservation.status.value,
        "correlation_id": reservation.correlation_id,
        "expires_at": reservation.expires_at,
        "reason": reservation.reason,
        "coupon": reservation.coupon,
        "created_at": now,
        "updated_at": now,
    }

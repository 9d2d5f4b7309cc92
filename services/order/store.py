"""Where orders and the catalog and merchant replicas live: the store protocol, its MongoDB
implementation, the document mapping. The in-memory twin for tests is tests/twins/order.py."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from services.order.domain import (
    BEFORE_PAYMENT,
    MAX_QUANTITY,
    WAITING,
    CatalogItem,
    Check,
    CouponTerms,
    MerchantTerms,
    Order,
    OrderStatus,
    PayAction,
    PaymentStatus,
    TimelineEntry,
)
from services.order.numbers import order_day
from shared.contracts import (
    AssignedCodes,
    CouponApplied,
    CouponDiscount,
    MerchantStatus,
    OrderEndReason,
    OrderLine,
    PayActionType,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ServiceSlot,
    ShippingAddress,
)
from shared.crypto import PersonalData, TokenSealer
from shared.errors import ConcurrentWrite
from shared.mongo import (
    Document,
    MongoStore,
    ServiceStore,
    TransactionView,
    duplicate_at,
    ensure_ttl_index,
)
from shared.store import EventStore, UnitOfWork

ORDERS = "orders"
CATALOG = "catalog"
IDEMPOTENCY = "idempotency_keys"
# Insert-only lookups beside `orders`: an order is updated at every step of the saga, and each
# secondary index on `orders` is rewritten by every update (on the embedded server an update with
# three of them costs 2.4 times one without). So `orders` is indexed by deadline alone; the number's
# uniqueness and the customers' and merchants' listings live in documents written once, when the
# order is placed. Their keys sort by placement, so a listing is a range read of one of them.
ORDER_NUMBERS = "order_numbers"  # _id: order_no
CUSTOMER_ORDERS = "customer_orders"  # _id: customer_order_key(...)
MERCHANT_ORDERS = "merchant_orders"  # _id: merchant_order_keys(...), one per merchant in the order
MERCHANTS = "merchants"  # _id: merchant_id; the replica of what each merchant accepts
COUPONS = "coupons"  # _id: code; the replica of merchants' coupons
MIGRATIONS = "migrations"  # _id: the name of a one-off migration that has completed


class ConcurrentUpdate(ConcurrentWrite):
    """Another writer changed an order since it was read; the work is retried on fresh state."""


class OrderNumberTaken(RuntimeError):
    """The order number is already used: the number sequence went backwards."""


class IdempotencyConflict(RuntimeError):
    """This Idempotency-Key was already used; `order_id` is the order it created."""

    def __init__(self, order_id: str, fingerprint: str) -> None:
        super().__init__(order_id)
        self.order_id = order_id
        self.fingerprint = fingerprint


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key (scoped to the customer) and the fingerprint of its request."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class KeyRecord:
    """What an Idempotency-Key is stored with: the order it created and its request's fingerprint."""

    order_id: str
    fingerprint: str


class Scope(StrEnum):
    CUSTOMER = "customer"  # one customer's orders
    MERCHANT = "merchant"  # orders holding at least one of one merchant's products
    ALL = "all"  # every order (admin)


@dataclass(frozen=True)
class OrderQuery:
    """A page of orders, newest first. `owner` is the customer or merchant id (None for ALL)."""

    scope: Scope
    owner: str | None = None
    statuses: frozenset[OrderStatus] | None = None
    placed_from: datetime | None = None  # inclusive
    placed_before: datetime | None = None  # exclusive
    cursor: str | None = None  # OrderPage.next_cursor of the page before
    limit: int = 20


@dataclass(frozen=True)
class OrderPage:
    """`orders` newest first; `next_cursor` is None on the last page. With a status filter a page
    may hold fewer than `limit` orders and still have a next page: a page scans a bounded number of
    orders, so one request never reads a customer's whole history."""

    orders: list[Order]
    next_cursor: str | None


@dataclass(frozen=True)
class NewOrder:
    """An order to store for the first time, with the Idempotency-Key that asked for it, if any."""

    order: Order
    idempotency: IdempotencyKey | None = None


class OrderTransaction(UnitOfWork, Protocol):
    """One atomic write: orders, the catalog replica, the ids of the events applied, the events caused."""

    async def insert_new(self, new: Sequence[NewOrder]) -> None:
        """Store new orders at version 1. Raises OrderNumberTaken when a number is used, and
        IdempotencyConflict when a key already created an order (for the first such order)."""
        ...

    async def save_changed(self, orders: Sequence[Order]) -> None:
        """Store each order if it is still at the version it was read at, and bump its version;
        raises ConcurrentUpdate (and nothing is stored) when another writer changed one."""
        ...

    async def upsert_catalog(self, items: Sequence[CatalogItem]) -> None: ...

    async def upsert_merchants(self, terms: Sequence[MerchantTerms]) -> None: ...

    async def upsert_coupons(self, coupons: Sequence[CouponTerms]) -> None: ...


class OrderStore(EventStore[OrderTransaction], Protocol):
    async def get(self, order_id: str) -> Order | None: ...

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        """The orders found among `order_ids`, by id."""
        ...

    async def by_number(self, order_no: str) -> Order | None: ...

    async def idempotency_key(self, key: str) -> KeyRecord | None:
        """What a stored (unexpired) Idempotency-Key created, if it was used."""
        ...

    async def page(self, query: OrderQuery) -> OrderPage: ...

    async def claim_overdue(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Order]:
        """Claim for `owner`, until `now + lease`, up to `limit` waiting orders whose deadline has
        passed (earliest deadline first), and return them. An order another owner holds a live claim
        on is left out, so two sweepers never get the same order while a claim lasts; an owner may
        claim again what it claimed before."""
        ...

    async def latest_order_no(self, day: str) -> str | None:
        """The highest order number used on `day` (`20261126`), if any."""
        ...

    async def catalog_items(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        """The replica's products among `skus`, inactive ones included."""
        ...

    async def catalog_page(self, limit: int) -> list[CatalogItem]:
        """Active products, by SKU."""
        ...

    async def merchant_terms(self, merchant_ids: Iterable[str]) -> dict[str, MerchantTerms]:
        """The replica's merchants among `merchant_ids`."""
        ...

    async def coupon(self, code: str) -> CouponTerms | None:
        """The replica's coupon with this code."""
        ...


# --- paging over the insert-only lookups ---------------------------------------------------

KEY_SEPARATOR = "|"  # never in a customer or merchant id (the API's identifier pattern has no "|")
_AFTER_SEPARATOR = "}"  # the character after "|": `owner}` bounds every key of `owner|...`
_AFTER_ORDER_NUMBERS = ":"  # the character after "9": bounds every `YYYYMMDD-seq`
_ORDER_NUMBER = re.compile(r"[0-9]{8}-[0-9]+")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,1024}")
MAX_PAGE_SCAN = 1000


class InvalidCursor(ValueError):
    """A cursor this listing did not hand out: damaged, made up, or from another owner's listing."""


def scan_budget(limit: int) -> int:
    """How many lookup keys one page may scan: enough for a sparse status filter to find something,
    few enough that one request never reads a whole history."""
    return max(limit, min(max(limit * 5, 200), MAX_PAGE_SCAN))


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor("the cursor is not one this listing handed out")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("the cursor is not one this listing handed out") from None


@dataclass(frozen=True)
class PagePlan:
    """Where a page's keys are: `lookup`'s keys in [lower, upper), read newest (highest) first."""

    lookup: str
    lower: str
    upper: str
    budget: int
    chunk: int  # keys read (and orders loaded) per round trip
    query: OrderQuery
    time_in_key: bool  # the key range already holds the time range exactly

    def keeps(self, order: Order) -> bool:
        query = self.query
        if query.statuses is not None and order.status not in query.statuses:
            return False
        if self.time_in_key:
            return True
        # As the key would have it: Mongo keeps milliseconds, so compare what it keeps.
        placed_at = _to_millisecond(order.placed_at)
        if query.placed_from is not None and placed_at < query.placed_from:
            return False
        return query.placed_before is None or placed_at < query.placed_before


def plan_page(query: OrderQuery) -> PagePlan | None:
    """The key range a query reads, or None when no order can match it. Raises InvalidCursor for
    a cursor outside the listing and ValueError for a query no caller should make."""
    if query.limit < 1:
        raise ValueError(f"a page holds at least one order, not {query.limit}")
    since, before = query.placed_from, query.placed_before
    if any(bound is not None and bound.tzinfo is None for bound in (since, before)):
        raise ValueError("a time range needs time-zone-aware datetimes")
    if query.scope is Scope.ALL:
        lookup, time_in_key = ORDER_NUMBERS, False
        # An order's number carries the China-local day it was placed (numbers.order_day), so
        # the days narrow the range; the exact times are checked on the loaded orders.
        lower = "" if since is None else f"{order_day(since)}-"
        last_day = None if before is None else order_day(before - timedelta(microseconds=1))
        upper = f"{last_day or ''}{_AFTER_ORDER_NUMBERS}"
    else:
        if not query.owner or KEY_SEPARATOR in query.owner:
            raise ValueError(f"a {query.scope} page needs the {query.scope}'s id, not {query.owner!r}")
        lookup, time_in_key = (CUSTOMER_ORDERS if query.scope is Scope.CUSTOMER else MERCHANT_ORDERS), True
        prefix = f"{query.owner}{KEY_SEPARATOR}"
        lower = prefix if since is None else f"{prefix}{_stamp(since)}"
        upper = f"{query.owner}{_AFTER_SEPARATOR}" if before is None else f"{prefix}{_stamp(before)}"
    if query.cursor is not None:
        after = decode_cursor(query.cursor)
        if not _in_listing(query, after):
            raise InvalidCursor("the cursor belongs to another listing")
        upper = min(upper, after)
    no_status = query.statuses is not None and not query.statuses
    if no_status or (since is not None and before is not None and since >= before):
        return None
    budget = scan_budget(query.limit)
    # Unfiltered, every key is an order on the page; filtered, read ahead in larger rounds.
    filtered = query.statuses is not None or (not time_in_key and (since, before) != (None, None))
    chunk = min(budget, max(query.limit * 2, 100) if filtered else query.limit)
    return PagePlan(lookup, lower, upper, budget, chunk, query, time_in_key)


def _in_listing(query: OrderQuery, key: str) -> bool:
    if query.scope is Scope.ALL:
        return _ORDER_NUMBER.fullmatch(key) is not None
    return key.startswith(f"{query.owner}{KEY_SEPARATOR}")


ScanKeys = Callable[[str, str, str, int], Awaitable[list[tuple[str, str]]]]
LoadOrders = Callable[[list[str]], Awaitable[dict[str, Order]]]


async def page_through(query: OrderQuery, scan: ScanKeys, load: LoadOrders) -> OrderPage:
    """A page of `query`, newest first. `scan(lookup, lower, upper, n)` gives up to n (key,
    order_id) of `lookup` in [lower, upper), highest key first; `load` reads orders by id at once.

    The cursor is the last key the page scanned, so the next page starts below it: a page never
    repeats nor skips an order, even while new orders are placed above it."""
    plan = plan_page(query)
    if plan is None:
        return OrderPage([], None)
    found: list[Order] = []
    scanned = 0
    upper = plan.upper
    while True:
        want = min(plan.chunk, plan.budget - scanned)
        keys = await scan(plan.lookup, plan.lower, upper, want + 1)  # one more tells if any is left
        chunk = keys[:want]
        orders = await load([order_id for _, order_id in chunk])
        kept = [plan.keeps(order) if (order := orders.get(order_id)) else False for _, order_id in chunk]
        used = 0
        for (key, order_id), keep in zip(chunk, kept, strict=True):
            if len(found) == query.limit:
                break
            used += 1
            upper = key
            if keep:
                found.append(orders[order_id])
        scanned += used
        # Past the page's last order: keys the scan read beyond it, or orders it loaded that match.
        more_keys, more_kept = len(keys) > used, any(kept[used:])
        if not more_keys or (len(keys) <= want and not more_kept):
            return OrderPage(found, None)
        if len(found) == query.limit or scanned >= plan.budget:
            return OrderPage(found, encode_cursor(upper))


def customer_order_key(order: Order) -> str:
    return _lookup_key(order.customer_id, order.placed_at, order.order_id)


def merchant_order_keys(order: Order) -> list[str]:
    """One key per merchant with a line in the order, so each merchant lists it once."""
    return [_lookup_key(m, order.placed_at, order.order_id) for m in sorted(order.merchant_ids)]


def _lookup_key(owner: str, placed_at: datetime, order_id: str) -> str:
    # Milliseconds, as Mongo keeps placed_at: a key rebuilt from a stored order is the key its
    # insert wrote, so a backfill racing with new inserts adds no second key for an order.
    return f"{owner}{KEY_SEPARATOR}{_stamp(_to_millisecond(placed_at))}{KEY_SEPARATOR}{order_id}"


def _stamp(when: datetime) -> str:
    # Fixed-width UTC time, so that an owner's keys sort as their orders were placed.
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")


def _to_millisecond(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


# --- MongoDB -------------------------------------------------------------------------------

_MIGRATION_BATCH = 500


@dataclass
class MongoOrderTransaction(TransactionView):
    documents: OrderDocuments

    async def insert_new(self, new: Sequence[NewOrder]) -> None:
        db, session = self.tx.db, self.tx.session
        keyed = [(n.order, n.idempotency) for n in new if n.idempotency is not None]
        if keyed:
            try:
                await db[IDEMPOTENCY].insert_many(
                    [
                        {
                            "_id": key.key,
                            "order_id": order.order_id,
                            "fingerprint": key.fingerprint,
                            "created_at": order.placed_at,
                        }
                        for order, key in keyed
                    ],
                    session=session,
                )
            except BulkWriteError as error:
                duplicate = duplicate_at(error)
                if duplicate is None:
                    raise
                key = keyed[duplicate[0]][1]
                existing = await db[IDEMPOTENCY].find_one({"_id": key.key})
                if existing is None:  # lost a race with a writer that rolled back
                    raise
                raise IdempotencyConflict(existing["order_id"], existing["fingerprint"]) from None
        try:
            await db[ORDER_NUMBERS].insert_many(
                [{"_id": n.order.order_no, "order_id": n.order.order_id} for n in new], session=session
            )
        except BulkWriteError as error:
            duplicate = duplicate_at(error)
            if duplicate is None:
                raise
            raise OrderNumberTaken(new[duplicate[0]].order.order_no) from error
        await db[CUSTOMER_ORDERS].insert_many(
            [{"_id": customer_order_key(n.order), "order_id": n.order.order_id} for n in new], session=session
        )
        await db[MERCHANT_ORDERS].insert_many(
            [{"_id": key, "order_id": n.order.order_id} for n in new for key in merchant_order_keys(n.order)],
            session=session,
        )
        for n in new:
            n.order.version = 1
        await db[ORDERS].insert_many([self.documents.to_doc(n.order) for n in new], session=session)

    async def save_changed(self, orders: Sequence[Order]) -> None:
        if not orders:
            return
        writes = []
        for order in orders:
            read_version = order.version
            order.version += 1
            # $set rather than a replace, so a sweeper's claim on the order outlives the change; the
            # $unset drops a token a document from before sealing still held in clear.
            fields = {name: value for name, value in self.documents.to_doc(order).items() if name != "_id"}
            writes.append(
                UpdateOne(
                    {"_id": order.order_id, "version": read_version},
                    {"$set": fields, "$unset": {CLEAR_TOKEN_FIELD: ""}},
                )
            )
        result = await self.tx.db[ORDERS].bulk_write(writes, ordered=False, session=self.tx.session)
        if result.matched_count != len(writes):
            raise ConcurrentUpdate(
                f"{len(writes) - result.matched_count} of {len(writes)} orders changed concurrently"
            )

    async def upsert_catalog(self, items: Sequence[CatalogItem]) -> None:
        if not items:
            return
        await self.tx.db[CATALOG].bulk_write(
            [UpdateOne({"_id": item.sku}, {"$set": catalog_to_doc(item)}, upsert=True) for item in items],
            ordered=True,
            session=self.tx.session,
        )

    async def upsert_merchants(self, terms: Sequence[MerchantTerms]) -> None:
        if not terms:
            return
        await self.tx.db[MERCHANTS].bulk_write(
            [UpdateOne({"_id": t.merchant_id}, {"$set": merchant_to_doc(t)}, upsert=True) for t in terms],
            ordered=True,  # the same merchant twice: the later terms win
            session=self.tx.session,
        )

    async def upsert_coupons(self, coupons: Sequence[CouponTerms]) -> None:
        if not coupons:
            return
        await self.tx.db[COUPONS].bulk_write(
            [UpdateOne({"_id": c.code}, {"$set": coupon_to_doc(c)}, upsert=True) for c in coupons],
            ordered=True,  # the same coupon twice: the later terms win
            session=self.tx.session,
        )


class MongoOrderStore(ServiceStore[MongoOrderTransaction]):
    def __init__(self, store: MongoStore, personal_data: PersonalData, token_sealer: TokenSealer) -> None:
        self.documents = OrderDocuments(personal_data, token_sealer)
        super().__init__(store, lambda tx: MongoOrderTransaction(tx, self.documents))
        self._db = store.db
        self._orders = store.db[ORDERS]
        self._catalog = store.db[CATALOG]
        self._idempotency = store.db[IDEMPOTENCY]

    async def ensure_indexes(self, *, idempotency_key_ttl_s: float) -> None:
        await self._orders.create_index([("deadline_at", ASCENDING)])
        await ensure_ttl_index(self._idempotency, "created_at", idempotency_key_ttl_s)
        await self._move_lookups_out_of_orders()
        await self._once("merchant_orders", self._list_stored_orders_by_merchant)
        await self._once("sealed_personal_data", self._seal_personal_data_in_stored_orders)
        await self._once("sealed_payment_tokens", self._seal_or_drop_clear_payment_tokens)

    async def _once(self, migration: str, run: Callable[[], Awaitable[None]]) -> None:
        """Runs a migration unless it completed before. Each is idempotent: replicas starting
        together may both run one, and a run cut short is run again in full."""
        done = self._db[MIGRATIONS]
        if await done.find_one({"_id": migration}) is not None:
            return
        await run()
        await done.update_one({"_id": migration}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True)

    async def _move_lookups_out_of_orders(self) -> None:
        """Orders stored before the insert-only lookups existed get theirs, and the indexes that
        served them on `orders` go."""
        old = {"order_no_1", "customer_id_1_placed_at_-1"}
        present = {index["name"] async for index in await self._orders.list_indexes()} & old
        if not present:
            return
        async for doc in self._orders.find({}, {"order_no": 1, "customer_id": 1, "placed_at": 1}):
            await self._db[ORDER_NUMBERS].update_one(
                {"_id": doc["order_no"]}, {"$setOnInsert": {"order_id": doc["_id"]}}, upsert=True
            )
            key = _lookup_key(doc["customer_id"], doc["placed_at"], doc["_id"])
            await self._db[CUSTOMER_ORDERS].update_one(
                {"_id": key}, {"$setOnInsert": {"order_id": doc["_id"]}}, upsert=True
            )
        for name in present:
            await self._orders.drop_index(name)

    async def _list_stored_orders_by_merchant(self) -> None:
        """Orders placed before merchants could list theirs get their merchant_orders keys."""
        writes: list[UpdateOne] = []
        async for doc in self._orders.find({}, {"placed_at": 1, "lines.merchant_id": 1}):
            for merchant_id in sorted({line["merchant_id"] for line in doc["lines"]}):
                key = _lookup_key(merchant_id, doc["placed_at"], doc["_id"])
                writes.append(
                    UpdateOne({"_id": key}, {"$setOnInsert": {"order_id": doc["_id"]}}, upsert=True)
                )
            if len(writes) >= _MIGRATION_BATCH:
                await self._db[MERCHANT_ORDERS].bulk_write(writes, ordered=False)
                writes = []
        if writes:
            await self._db[MERCHANT_ORDERS].bulk_write(writes, ordered=False)

    async def _seal_personal_data_in_stored_orders(self) -> None:
        """Addresses stored in clear before personal data was sealed get sealed."""
        in_clear = {"shipping_address": {"$type": "object"}}
        writes: list[UpdateOne] = []
        async for doc in self._orders.find(in_clear, {"shipping_address": 1}):
            sealed = self.documents.seal_address(ShippingAddress.model_validate(doc["shipping_address"]))
            # Guarded by the clear form: an order saved meanwhile was sealed by its save.
            writes.append(UpdateOne({"_id": doc["_id"], **in_clear}, {"$set": {"shipping_address": sealed}}))
            if len(writes) >= _MIGRATION_BATCH:
                await self._orders.bulk_write(writes, ordered=False)
                writes = []
        if writes:
            await self._orders.bulk_write(writes, ordered=False)

    async def _seal_or_drop_clear_payment_tokens(self) -> None:
        """Orders stored before provider tokens were sealed hold theirs in clear. One that has not
        requested payment yet still needs it: sealed. Any other used it or never will: dropped."""
        in_clear = {CLEAR_TOKEN_FIELD: {"$exists": True}}
        writes: list[UpdateOne] = []
        async for doc in self._orders.find(in_clear, {CLEAR_TOKEN_FIELD: 1, "status": 1}):
            token = doc[CLEAR_TOKEN_FIELD]
            update: Document = {"$unset": {CLEAR_TOKEN_FIELD: ""}}
            if isinstance(token, str) and OrderStatus(doc["status"]) in BEFORE_PAYMENT:
                update["$set"] = {SEALED_TOKEN_FIELD: self.documents.token_sealer.seal(token)}
            # Guarded by the clear token: an order saved meanwhile lost it in its save.
            writes.append(UpdateOne({"_id": doc["_id"], CLEAR_TOKEN_FIELD: token}, update))
            if len(writes) >= _MIGRATION_BATCH:
                await self._orders.bulk_write(writes, ordered=False)
                writes = []
        if writes:
            await self._orders.bulk_write(writes, ordered=False)

    async def get(self, order_id: str) -> Order | None:
        doc = await self._orders.find_one({"_id": order_id})
        return self.documents.from_doc(doc) if doc else None

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        cursor = self._orders.find({"_id": {"$in": list(set(order_ids))}})
        return {doc["_id"]: self.documents.from_doc(doc) async for doc in cursor}

    async def by_number(self, order_no: str) -> Order | None:
        number = await self._db[ORDER_NUMBERS].find_one({"_id": order_no})
        return None if number is None else await self.get(number["order_id"])

    async def idempotency_key(self, key: str) -> KeyRecord | None:
        doc = await self._idempotency.find_one({"_id": key})
        return None if doc is None else KeyRecord(doc["order_id"], doc["fingerprint"])

    async def page(self, query: OrderQuery) -> OrderPage:
        return await page_through(query, self._scan, self.get_many)

    async def _scan(self, lookup: str, lower: str, upper: str, limit: int) -> list[tuple[str, str]]:
        keys = self._db[lookup].find({"_id": {"$gte": lower, "$lt": upper}})
        return [(doc["_id"], doc["order_id"]) async for doc in keys.sort("_id", DESCENDING).limit(limit)]

    async def claim_overdue(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Order]:
        due = {"deadline_at": {"$lte": now}, "status": {"$in": [status.value for status in WAITING]}}
        claimable = {"$or": [{"sweep_until": None}, {"sweep_until": {"$lte": now}}, {"sweep_owner": owner}]}
        candidates = self._orders.find({**due, **claimable}, {"_id": 1}).sort("deadline_at", ASCENDING)
        ids = [doc["_id"] async for doc in candidates.limit(limit)]
        if not ids:
            return []
        # Each document's filter and update are atomic: of two sweepers racing for an order, the
        # second no longer finds it claimable.
        await self._orders.update_many(
            {"_id": {"$in": ids}, **due, **claimable},
            {"$set": {"sweep_owner": owner, "sweep_until": now + lease}},
        )
        claimed = self._orders.find({"_id": {"$in": ids}, **due, "sweep_owner": owner})
        return [self.documents.from_doc(doc) async for doc in claimed.sort("deadline_at", ASCENDING)]

    async def latest_order_no(self, day: str) -> str | None:
        doc = await self._db[ORDER_NUMBERS].find_one(
            {"_id": {"$gte": f"{day}-", "$lt": f"{day}."}}, {"_id": 1}, sort=[("_id", DESCENDING)]
        )
        return None if doc is None else str(doc["_id"])

    async def catalog_items(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        cursor = self._catalog.find({"_id": {"$in": list(set(skus))}})
        return {doc["_id"]: catalog_from_doc(doc) async for doc in cursor}

    async def catalog_page(self, limit: int) -> list[CatalogItem]:
        cursor = self._catalog.find({"active": True}).sort("_id", ASCENDING).limit(limit)
        return [catalog_from_doc(doc) async for doc in cursor]

    async def merchant_terms(self, merchant_ids: Iterable[str]) -> dict[str, MerchantTerms]:
        cursor = self._db[MERCHANTS].find({"_id": {"$in": list(set(merchant_ids))}})
        return {doc["_id"]: merchant_from_doc(doc) async for doc in cursor}

    async def coupon(self, code: str) -> CouponTerms | None:
        doc = await self._db[COUPONS].find_one({"_id": code})
        return None if doc is None else coupon_from_doc(doc)


# --- document mapping ----------------------------------------------------------------------


# Where an order document keeps the provider token: sealed for the payment service. Documents from
# before sealing kept it in clear under another name, which no write uses any more.
SEALED_TOKEN_FIELD = "sealed_payment_token"  # noqa: S105 - a field name, not a secret
CLEAR_TOKEN_FIELD = "payment_token"  # noqa: S105 - a field name, not a secret
# A document from before the payment view says where its payment stood through its timeline.
_PAYMENT_BY_CAUSE = {
    "order.payment_requested": PaymentStatus.REQUESTED,
    "payment.authorized": PaymentStatus.AUTHORIZED,
    "payment.failed": PaymentStatus.FAILED,
}


@dataclass(frozen=True)
class OrderDocuments:
    """Orders as documents. The address and a guest's contact are personal data, and the provider
    token a credential: sealed at rest, never in clear. Documents from before sealing (the address
    a plain object, the token in clear) still read, the token sealed as it is read."""

    personal_data: PersonalData
    token_sealer: TokenSealer

    def seal_address(self, address: ShippingAddress) -> str:
        return self.personal_data.seal(address.model_dump_json())

    def to_doc(self, order: Order) -> Document:
        return {
            "_id": order.order_id,
            "order_no": order.order_no,
            "customer_id": order.customer_id,
            "lines": [line.model_dump(mode="json") for line in order.lines],
            "total_fen": order.total_fen,
            "currency": order.currency,
            "shipping_address": self.seal_address(order.shipping_address),
            "contact": None if order.contact is None else self.personal_data.seal(order.contact),
            "payment_method": order.payment_method.value,
            SEALED_TOKEN_FIELD: order.payment_token,
            "payment": {
                "status": order.payment_status.value,
                # The pay page's URL carries the provider's reference: sealed like personal data.
                "action": None
                if order.pay_action is None
                else {
                    "type": order.pay_action.type.value,
                    "sealed_url": self.personal_data.seal(order.pay_action.url),
                },
                "refunded_fen": order.refunded_fen,
            },
            "placed_at": order.placed_at,
            "deadline_at": order.deadline_at,
            "status": order.status.value,
            "reason": None if order.reason is None else order.reason.value,
            "stock": order.stock.value,
            "fraud": order.fraud.value,
            "fraud_score": order.fraud_score,
            "payment_id": order.payment_id,
            "correlation_id": order.correlation_id,
            "timeline": [
                {"status": e.status.value, "at": e.at, "cause": e.cause, "note": e.note, "detail": e.detail}
                for e in order.timeline
            ],
            # Sealed by inventory with the shared key ring, and stored as they came.
            "codes": [line.model_dump(mode="json") for line in order.codes],
            "version": order.version,
            "coupon": None if order.coupon is None else order.coupon.model_dump(mode="json"),
            "substitutes": order.substitutes,
        }

    def from_doc(self, doc: Mapping[str, Any]) -> Order:
        reason = doc.get("reason")
        address = doc["shipping_address"]
        contact = doc.get("contact")
        timeline = [
            TimelineEntry(
                status=OrderStatus(e["status"]),
                at=e["at"],
                cause=e["cause"],
                note=e.get("note", ""),
                detail=e.get("detail", ""),
            )
            for e in doc["timeline"]
        ]
        payment = doc.get("payment")
        if payment is None:
            causes = [_PAYMENT_BY_CAUSE[e.cause] for e in timeline if e.cause in _PAYMENT_BY_CAUSE]
            payment = {"status": causes[-1] if causes else PaymentStatus.NOT_REQUESTED}
        action = payment.get("action")
        coupon = doc.get("coupon")  # absent on orders from before coupons
        return Order(
            order_id=doc["_id"],
            order_no=doc["order_no"],
            customer_id=doc["customer_id"],
            lines=[OrderLine.model_validate(line) for line in doc["lines"]],
            shipping_address=(
                ShippingAddress.model_validate_json(self.personal_data.open(address))
                if isinstance(address, str)
                else ShippingAddress.model_validate(address)
            ),
            payment_method=PaymentMethod(doc["payment_method"]),
            payment_token=self._sealed_token(doc),
            placed_at=doc["placed_at"],
            deadline_at=doc.get("deadline_at"),
            status=OrderStatus(doc["status"]),
            reason=None if reason is None else OrderEndReason(reason),
            stock=Check(doc["stock"]),
            fraud=Check(doc["fraud"]),
            fraud_score=doc.get("fraud_score"),
            payment_id=doc.get("payment_id"),
            payment_status=PaymentStatus(payment["status"]),
            pay_action=None
            if action is None
            else PayAction(PayActionType(action["type"]), self.personal_data.open(action["sealed_url"])),
            refunded_fen=payment.get("refunded_fen", 0),
            currency=doc.get("currency", "CNY"),
            correlation_id=doc.get("correlation_id", doc["_id"]),
            contact=None if contact is None else self.personal_data.open(contact),
            timeline=timeline,
            codes=[AssignedCodes.model_validate(line) for line in doc.get("codes", [])],
            version=doc["version"],
            coupon=None if coupon is None else CouponApplied.model_validate(coupon),
            substitutes=list(doc.get("substitutes", [])),
        )

    def _sealed_token(self, doc: Mapping[str, Any]) -> str | None:
        sealed: str | None = doc.get(SEALED_TOKEN_FIELD)
        clear = doc.get(CLEAR_TOKEN_FIELD)
        if sealed is not None or not isinstance(clear, str):
            return sealed
        # Written before tokens were sealed and not migrated yet: kept, sealed, only while the order
        # has still to request payment with it.
        return self.token_sealer.seal(clear) if OrderStatus(doc["status"]) in BEFORE_PAYMENT else None


def catalog_to_doc(item: CatalogItem) -> Document:
    return {
        "name": item.name,
        "merchant_id": item.merchant_id,
        "kind": item.kind.value,
        "price_fen": item.price_fen,
        "active": item.active,
        "max_per_order": item.max_per_order,
        "price_tiers": [tier.model_dump() for tier in item.price_tiers],
        "description": item.description,
        "category": item.category,
        "attributes": dict(item.attributes),
        "payment_methods": [m.value for m in PaymentMethod if m in item.payment_methods],
        "slots": [slot.model_dump() for slot in item.slots],
    }


def catalog_from_doc(doc: Mapping[str, Any]) -> CatalogItem:
    return CatalogItem(
        sku=doc["_id"],
        name=doc["name"],
        merchant_id=doc["merchant_id"],
        kind=ProductKind(doc["kind"]),
        price_fen=doc["price_fen"],
        active=doc["active"],
        max_per_order=doc.get("max_per_order", MAX_QUANTITY),
        # Replicated before tiers existed: one price.
        price_tiers=tuple(PriceTier.model_validate(tier) for tier in doc.get("price_tiers", [])),
        # Replicated before these details existed: none, and every method its merchant accepts.
        description=doc.get("description", ""),
        category=doc.get("category", ""),
        attributes=dict(doc.get("attributes") or {}),
        payment_methods=frozenset(PaymentMethod(m) for m in doc.get("payment_methods") or ()),
        # Replicated before service products existed: none.
        slots=tuple(ServiceSlot.model_validate(slot) for slot in doc.get("slots", [])),
    )


def merchant_to_doc(terms: MerchantTerms) -> Document:
    return {
        "payment_methods": sorted(method.value for method in terms.payment_methods),
        "status": terms.status.value,
        "reason": terms.reason,
    }


def merchant_from_doc(doc: Mapping[str, Any]) -> MerchantTerms:
    # Merchants replicated before vetting existed were all selling: they read as approved.
    return MerchantTerms(
        merchant_id=doc["_id"],
        payment_methods=frozenset(PaymentMethod(method) for method in doc["payment_methods"]),
        status=MerchantStatus(doc.get("status", MerchantStatus.APPROVED.value)),
        reason=doc.get("reason", ""),
    )


def coupon_to_doc(coupon: CouponTerms) -> Document:
    return {
        "merchant_id": coupon.merchant_id,
        "discount": coupon.discount.value,
        "value": coupon.value,
        "valid_from": coupon.valid_from,
        "valid_until": coupon.valid_until,
        "min_spend_fen": coupon.min_spend_fen,
        "active": coupon.active,
    }


def coupon_from_doc(doc: Mapping[str, Any]) -> CouponTerms:
    return CouponTerms(
        code=doc["_id"],
        merchant_id=doc["merchant_id"],
        discount=CouponDiscount(doc["discount"]),
        value=doc["value"],
        valid_from=doc["valid_from"],
        valid_until=doc["valid_until"],
        min_spend_fen=doc["min_spend_fen"],
        active=doc["active"],
    )

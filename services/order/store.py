"""Where orders and the catalog replica live: the store protocol, its MongoDB implementation, the
document mapping. The in-memory twin for tests is tests/twins/order.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from services.order.domain import (
    WAITING,
    CatalogItem,
    Check,
    Order,
    OrderStatus,
    TimelineEntry,
)
from shared.contracts import (
    OrderEndReason,
    OrderLine,
    PaymentMethod,
    ProductKind,
    ShippingAddress,
)
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
# uniqueness and the customer's listing live in documents written once, when the order is placed.
ORDER_NUMBERS = "order_numbers"  # _id: order_no
CUSTOMER_ORDERS = "customer_orders"  # _id: customer_order_key(...)


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


class OrderStore(EventStore[OrderTransaction], Protocol):
    async def get(self, order_id: str) -> Order | None: ...

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        """The orders found among `order_ids`, by id."""
        ...

    async def for_customer(self, customer_id: str, limit: int) -> list[Order]:
        """A customer's most recent orders, newest first."""
        ...

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


# --- MongoDB -------------------------------------------------------------------------------


class MongoOrderTransaction(TransactionView):
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
        for n in new:
            n.order.version = 1
        await db[ORDERS].insert_many([order_to_doc(n.order) for n in new], session=session)

    async def save_changed(self, orders: Sequence[Order]) -> None:
        if not orders:
            return
        writes = []
        for order in orders:
            read_version = order.version
            order.version += 1
            # $set rather than a replace, so a sweeper's claim on the order outlives the change.
            fields = {name: value for name, value in order_to_doc(order).items() if name != "_id"}
            writes.append(UpdateOne({"_id": order.order_id, "version": read_version}, {"$set": fields}))
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


class MongoOrderStore(ServiceStore[MongoOrderTransaction]):
    def __init__(self, store: MongoStore) -> None:
        super().__init__(store, MongoOrderTransaction)
        self._orders = store.db[ORDERS]
        self._catalog = store.db[CATALOG]
        self._idempotency = store.db[IDEMPOTENCY]

    async def ensure_indexes(self, *, idempotency_key_ttl_s: float) -> None:
        await self._orders.create_index([("deadline_at", ASCENDING)])
        await ensure_ttl_index(self._idempotency, "created_at", idempotency_key_ttl_s)
        await self._move_lookups_out_of_orders()

    async def _move_lookups_out_of_orders(self) -> None:
        """Orders stored before the insert-only lookups existed get theirs, and the indexes that
        served them on `orders` go."""
        old = {"order_no_1", "customer_id_1_placed_at_-1"}
        present = {index["name"] async for index in await self._orders.list_indexes()} & old
        if not present:
            return
        db = self._orders.database
        async for doc in self._orders.find({}, {"order_no": 1, "customer_id": 1, "placed_at": 1}):
            await db[ORDER_NUMBERS].update_one(
                {"_id": doc["order_no"]}, {"$setOnInsert": {"order_id": doc["_id"]}}, upsert=True
            )
            key = _customer_key(doc["customer_id"], doc["placed_at"], doc["_id"])
            await db[CUSTOMER_ORDERS].update_one(
                {"_id": key}, {"$setOnInsert": {"order_id": doc["_id"]}}, upsert=True
            )
        for name in present:
            await self._orders.drop_index(name)

    async def get(self, order_id: str) -> Order | None:
        doc = await self._orders.find_one({"_id": order_id})
        return order_from_doc(doc) if doc else None

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        cursor = self._orders.find({"_id": {"$in": list(set(order_ids))}})
        return {doc["_id"]: order_from_doc(doc) async for doc in cursor}

    async def for_customer(self, customer_id: str, limit: int) -> list[Order]:
        db = self._orders.database
        prefix = f"{customer_id}{KEY_SEPARATOR}"
        # The keys sort by time within a customer; "}" is the character after the separator.
        cursor = db[CUSTOMER_ORDERS].find({"_id": {"$gte": prefix, "$lt": f"{customer_id}}}"}})
        order_ids = [doc["order_id"] async for doc in cursor.sort("_id", DESCENDING).limit(limit)]
        found = await self.get_many(order_ids)
        return [found[order_id] for order_id in order_ids if order_id in found]

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
        return [order_from_doc(doc) async for doc in claimed.sort("deadline_at", ASCENDING)]

    async def latest_order_no(self, day: str) -> str | None:
        doc = await self._orders.database[ORDER_NUMBERS].find_one(
            {"_id": {"$gte": f"{day}-", "$lt": f"{day}."}}, {"_id": 1}, sort=[("_id", DESCENDING)]
        )
        return None if doc is None else str(doc["_id"])

    async def catalog_items(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        cursor = self._catalog.find({"_id": {"$in": list(set(skus))}})
        return {doc["_id"]: catalog_from_doc(doc) async for doc in cursor}

    async def catalog_page(self, limit: int) -> list[CatalogItem]:
        cursor = self._catalog.find({"active": True}).sort("_id", ASCENDING).limit(limit)
        return [catalog_from_doc(doc) async for doc in cursor]


KEY_SEPARATOR = "|"  # never in a customer id (the API's identifier pattern has no "|")


def customer_order_key(order: Order) -> str:
    return _customer_key(order.customer_id, order.placed_at, order.order_id)


def _customer_key(customer_id: str, placed_at: datetime, order_id: str) -> str:
    # Fixed-width UTC time, so that a customer's keys sort as their orders were placed.
    when = placed_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
    return f"{customer_id}{KEY_SEPARATOR}{when}{KEY_SEPARATOR}{order_id}"


# --- document mapping ----------------------------------------------------------------------


def order_to_doc(order: Order) -> Document:
    return {
        "_id": order.order_id,
        "order_no": order.order_no,
        "customer_id": order.customer_id,
        "lines": [line.model_dump(mode="json") for line in order.lines],
        "total_fen": order.total_fen,
        "currency": order.currency,
        "shipping_address": order.shipping_address.model_dump(mode="json"),
        "payment_method": order.payment_method.value,
        "payment_token": order.payment_token,
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
            {"status": e.status.value, "at": e.at, "cause": e.cause, "note": e.note} for e in order.timeline
        ],
        "version": order.version,
    }


def order_from_doc(doc: Mapping[str, Any]) -> Order:
    reason = doc.get("reason")
    return Order(
        order_id=doc["_id"],
        order_no=doc["order_no"],
        customer_id=doc["customer_id"],
        lines=[OrderLine.model_validate(line) for line in doc["lines"]],
        shipping_address=ShippingAddress.model_validate(doc["shipping_address"]),
        payment_method=PaymentMethod(doc["payment_method"]),
        payment_token=doc["payment_token"],
        placed_at=doc["placed_at"],
        deadline_at=doc.get("deadline_at"),
        status=OrderStatus(doc["status"]),
        reason=None if reason is None else OrderEndReason(reason),
        stock=Check(doc["stock"]),
        fraud=Check(doc["fraud"]),
        fraud_score=doc.get("fraud_score"),
        payment_id=doc.get("payment_id"),
        currency=doc.get("currency", "CNY"),
        correlation_id=doc.get("correlation_id", doc["_id"]),
        timeline=[
            TimelineEntry(
                status=OrderStatus(e["status"]), at=e["at"], cause=e["cause"], note=e.get("note", "")
            )
            for e in doc["timeline"]
        ],
        version=doc["version"],
    )


def catalog_to_doc(item: CatalogItem) -> Document:
    return {
        "name": item.name,
        "merchant_id": item.merchant_id,
        "kind": item.kind.value,
        "price_fen": item.price_fen,
        "active": item.active,
    }


def catalog_from_doc(doc: Mapping[str, Any]) -> CatalogItem:
    return CatalogItem(
        sku=doc["_id"],
        name=doc["name"],
        merchant_id=doc["merchant_id"],
        kind=ProductKind(doc["kind"]),
        price_fen=doc["price_fen"],
        active=doc["active"],
    )

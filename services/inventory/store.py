"""Where merchants, products and reservations live: the store protocol, MongoDB, and an in-memory twin."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.inventory.domain import (
    Changes,
    Merchant,
    Product,
    Reservation,
    ReservationStatus,
)
from shared.contracts import Envelope, ProductKind, StockLine
from shared.errors import ConcurrentWrite
from shared.kafka import Delivery, first_unseen
from shared.mongo import Document, MongoStore, Transaction

MERCHANTS = "merchants"
PRODUCTS = "products"
RESERVATIONS = "reservations"
CANDIDATES_PER_MERCHANT = 10


class StockConflict(ConcurrentWrite):
    """Stock or a reservation changed since the batch read it (another replica); retry the batch."""


class StockTransaction(Protocol):
    """One atomic unit: reads see a consistent view, writes commit with the applied ids and outbox."""

    async def products(self, skus: Collection[str]) -> dict[str, Product]: ...

    async def substitute_candidates(
        self, merchant_ids: Collection[str], exclude: Collection[str]
    ) -> list[Product]: ...

    async def reservations(self, order_ids: Collection[str]) -> dict[str, Reservation]: ...

    async def expired_reservations(self, now: datetime, limit: int) -> dict[str, Reservation]: ...

    async def merchant(self, merchant_id: str) -> Merchant | None: ...

    async def save(self, changes: Changes) -> None: ...

    async def put_product(self, product: Product) -> Product: ...

    def mark_applied(self, event_ids: Sequence[str]) -> None: ...

    def emit(self, envelopes: Sequence[Envelope]) -> None: ...


class InventoryStore(Protocol):
    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]: ...

    def transaction(self, consumer: str) -> AbstractAsyncContextManager[StockTransaction]: ...

    async def list_products(self, merchant_id: str | None = None) -> list[Product]: ...

    async def get_product(self, sku: str) -> Product | None: ...

    async def add_merchant(self, merchant: Merchant) -> Merchant | None:
        """Insert; when the id is taken, the merchant already stored (and nothing is written)."""
        ...

    async def list_merchants(self) -> list[Merchant]: ...


# --- MongoDB ---------------------------------------------------------------------------------


class MongoInventoryStore:
    def __init__(self, store: MongoStore) -> None:
        self.base = store
        self._merchants = store.db[MERCHANTS]
        self._products = store.db[PRODUCTS]
        self._reservations = store.db[RESERVATIONS]

    async def ensure_indexes(self) -> None:
        await self._products.create_index([("merchant_id", ASCENDING), ("available", DESCENDING)])
        await self._reservations.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return await self.base.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[StockTransaction]:
        async with self.base.transaction(consumer) as tx:
            yield _MongoTransaction(self, tx)

    async def list_products(self, merchant_id: str | None = None) -> list[Product]:
        query = {} if merchant_id is None else {"merchant_id": merchant_id}
        return [_product(doc) async for doc in self._products.find(query).sort("_id", ASCENDING)]

    async def get_product(self, sku: str) -> Product | None:
        doc = await self._products.find_one({"_id": sku})
        return None if doc is None else _product(doc)

    async def add_merchant(self, merchant: Merchant) -> Merchant | None:
        try:
            await self._merchants.insert_one(
                {"_id": merchant.merchant_id, "name": merchant.name, "created_at": datetime.now(UTC)}
            )
            return None
        except DuplicateKeyError:
            doc = await self._merchants.find_one({"_id": merchant.merchant_id})
            return None if doc is None else Merchant(doc["_id"], doc["name"])

    async def list_merchants(self) -> list[Merchant]:
        return [Merchant(d["_id"], d["name"]) async for d in self._merchants.find().sort("_id", ASCENDING)]


@dataclass
class _MongoTransaction:
    store: MongoInventoryStore
    tx: Transaction

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        cursor = self.store._products.find({"_id": {"$in": list(skus)}}, session=self.tx.session)
        return {doc["_id"]: _product(doc) async for doc in cursor}

    async def substitute_candidates(
        self, merchant_ids: Collection[str], exclude: Collection[str]
    ) -> list[Product]:
        cursor = (
            self.store._products.find(
                {
                    "merchant_id": {"$in": list(merchant_ids)},
                    "active": True,
                    "available": {"$gt": 0},
                    "_id": {"$nin": list(exclude)},
                },
                session=self.tx.session,
            )
            .sort([("available", DESCENDING), ("_id", ASCENDING)])
            .limit(CANDIDATES_PER_MERCHANT * len(merchant_ids))
        )
        return [_product(doc) async for doc in cursor]

    async def reservations(self, order_ids: Collection[str]) -> dict[str, Reservation]:
        cursor = self.store._reservations.find({"_id": {"$in": list(order_ids)}}, session=self.tx.session)
        return {doc["_id"]: _reservation(doc) async for doc in cursor}

    async def expired_reservations(self, now: datetime, limit: int) -> dict[str, Reservation]:
        cursor = (
            self.store._reservations.find(
                {"status": ReservationStatus.HELD.value, "expires_at": {"$lte": now}},
                session=self.tx.session,
            )
            .sort("expires_at", ASCENDING)
            .limit(limit)
        )
        return {doc["_id"]: _reservation(doc) async for doc in cursor}

    async def merchant(self, merchant_id: str) -> Merchant | None:
        doc = await self.store._merchants.find_one({"_id": merchant_id}, session=self.tx.session)
        return None if doc is None else Merchant(doc["_id"], doc["name"])

    async def save(self, changes: Changes) -> None:
        now = datetime.now(UTC)
        session = self.tx.session
        stock_ops = [
            _stock_update(sku, delta.available, delta.reserved, now) for sku, delta in changes.stock.items()
        ]
        if stock_ops:
            result = await self.store._products.bulk_write(stock_ops, ordered=False, session=session)
            if result.matched_count != len(stock_ops):
                raise StockConflict(f"{len(stock_ops) - result.matched_count} stock update(s) lost a race")
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
        if reservation_ops or moves:
            try:
                result = await self.store._reservations.bulk_write(
                    [*reservation_ops, *moves], ordered=False, session=session
                )
            except BulkWriteError as error:
                raise StockConflict(f"reservation written concurrently: {error}") from error
            if result.matched_count != len(moves):
                raise StockConflict(f"{len(moves) - result.matched_count} reservation(s) already moved on")

    async def put_product(self, product: Product) -> Product:
        doc = await self.store._products.find_one_and_update(
            {"_id": product.sku},
            {
                "$set": {
                    "name": product.name,
                    "merchant_id": product.merchant_id,
                    "price_fen": product.price_fen,
                    "currency": product.currency,
                    "kind": product.kind.value,
                    "available": product.available,
                    "active": product.active,
                    "updated_at": datetime.now(UTC),
                },
                "$setOnInsert": {"reserved": 0},
            },
            upsert=True,
            return_document=True,
            session=self.tx.session,
        )
        if doc is None:  # cannot happen with upsert + return_document; keeps the type honest
            raise StockConflict(f"product {product.sku} vanished while being written")
        return _product(doc)

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.tx.mark_applied(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.tx.emit(envelopes)


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
    )


def _reservation(doc: Document) -> Reservation:
    return Reservation(
        order_id=doc["_id"],
        lines=[StockLine(sku=line["sku"], quantity=line["quantity"]) for line in doc["lines"]],
        status=ReservationStatus(doc["status"]),
        correlation_id=str(doc.get("correlation_id") or doc["_id"]),
        expires_at=doc.get("expires_at"),
        reason=doc.get("reason", ""),
    )


def _reservation_document(reservation: Reservation, now: datetime) -> Document:
    return {
        "_id": reservation.order_id,
        "lines": [line.model_dump() for line in reservation.lines],
        "status": reservation.status.value,
        "correlation_id": reservation.correlation_id,
        "expires_at": reservation.expires_at,
        "reason": reservation.reason,
        "created_at": now,
        "updated_at": now,
    }


# --- in memory, for unit tests -----------------------------------------------------------------


@dataclass
class _State:
    merchants: dict[str, Merchant] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    outbox: list[Envelope] = field(default_factory=list)


class InMemoryInventoryStore:
    """Same behaviour as the Mongo store, including the stock guards, on plain dicts."""

    def __init__(self) -> None:
        self.state = _State()

    @property
    def outbox(self) -> list[Envelope]:
        return self.state.outbox

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        fresh, _ = first_unseen(consumer, deliveries, self.state.applied)
        return fresh

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[StockTransaction]:
        # Work on a copy and swap it in at the end: an exception leaves the state untouched.
        draft = copy.deepcopy(self.state)
        tx = _MemoryTransaction(draft, consumer)
        yield tx
        if draft.applied & {f"{consumer}:{eid}" for eid in tx.applied}:
            raise ConcurrentWrite("event applied twice")
        draft.applied.update(f"{consumer}:{eid}" for eid in tx.applied)
        draft.outbox.extend(tx.outgoing)
        self.state = draft

    async def list_products(self, merchant_id: str | None = None) -> list[Product]:
        products = sorted(self.state.products.values(), key=lambda p: p.sku)
        return [copy.copy(p) for p in products if merchant_id in (None, p.merchant_id)]

    async def get_product(self, sku: str) -> Product | None:
        product = self.state.products.get(sku)
        return None if product is None else copy.copy(product)

    async def add_merchant(self, merchant: Merchant) -> Merchant | None:
        existing = self.state.merchants.get(merchant.merchant_id)
        if existing is None:
            self.state.merchants[merchant.merchant_id] = merchant
        return existing

    async def list_merchants(self) -> list[Merchant]:
        return sorted(self.state.merchants.values(), key=lambda m: m.merchant_id)


@dataclass
class _MemoryTransaction:
    state: _State
    consumer: str
    applied: list[str] = field(default_factory=list)
    outgoing: list[Envelope] = field(default_factory=list)

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

    async def put_product(self, product: Product) -> Product:
        existing = self.state.products.get(product.sku)
        stored = copy.copy(product)
        stored.reserved = existing.reserved if existing is not None else 0
        self.state.products[product.sku] = stored
        return copy.copy(stored)

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.applied.extend(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.outgoing.extend(envelopes)


def _by_expiry(reservations: Iterable[Reservation]) -> list[Reservation]:
    return sorted(reservations, key=lambda r: r.expires_at or datetime.max.replace(tzinfo=UTC))

"""Where orders and the catalog replica live: the Mongo implementation and its document mapping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.order.domain import (
    WAITING,
    CatalogItem,
    Check,
    Order,
    OrderStatus,
    TimelineEntry,
)
from shared.contracts import OrderLine, PaymentMethod, ProductKind, ShippingAddress
from shared.errors import ConcurrentWrite
from shared.mongo import Document, MongoStore, Transaction

ORDERS = "orders"
CATALOG = "catalog"
IDEMPOTENCY = "idempotency_keys"


class ConcurrentUpdate(ConcurrentWrite):
    """Another writer changed an order since it was read; the batch is retried on fresh state."""


class OrderNumberTaken(RuntimeError):
    """The order number is already used: the number sequence went backwards."""


class IdempotencyConflict(RuntimeError):
    """This Idempotency-Key was already used; `order_id` is the order it created."""

    def __init__(self, order_id: str, fingerprint: str) -> None:
        super().__init__(order_id)
        self.order_id = order_id
        self.fingerprint = fingerprint


class OrderStore:
    def __init__(self, store: MongoStore) -> None:
        self.base = store
        self._orders = store.db[ORDERS]
        self._catalog = store.db[CATALOG]
        self._idempotency = store.db[IDEMPOTENCY]

    async def ensure_indexes(self) -> None:
        await self._orders.create_index([("order_no", ASCENDING)], unique=True)
        await self._orders.create_index([("customer_id", ASCENDING), ("placed_at", DESCENDING)])
        await self._orders.create_index([("deadline_at", ASCENDING)])

    # --- reads ---------------------------------------------------------------------------

    async def get(self, order_id: str) -> Order | None:
        doc = await self._orders.find_one({"_id": order_id})
        return order_from_doc(doc) if doc else None

    async def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]:
        cursor = self._orders.find({"_id": {"$in": list(set(order_ids))}})
        return {doc["_id"]: order_from_doc(doc) async for doc in cursor}

    async def for_customer(self, customer_id: str, limit: int) -> list[Order]:
        cursor = self._orders.find({"customer_id": customer_id}).sort("placed_at", DESCENDING).limit(limit)
        return [order_from_doc(doc) async for doc in cursor]

    async def overdue(self, now: datetime, limit: int) -> list[Order]:
        cursor = self._orders.find(
            {"deadline_at": {"$lte": now}, "status": {"$in": [s.value for s in WAITING]}}
        ).limit(limit)
        return [order_from_doc(doc) async for doc in cursor]

    async def latest_order_no(self, day: str) -> str | None:
        doc = await self._orders.find_one(
            {"order_no": {"$gte": f"{day}-", "$lt": f"{day}."}},
            {"order_no": 1},
            sort=[("order_no", DESCENDING)],
        )
        return None if doc is None else str(doc["order_no"])

    async def catalog_items(self, skus: Iterable[str]) -> dict[str, CatalogItem]:
        cursor = self._catalog.find({"_id": {"$in": list(set(skus))}})
        return {doc["_id"]: catalog_from_doc(doc) async for doc in cursor}

    async def catalog_page(self, limit: int) -> list[CatalogItem]:
        cursor = self._catalog.find({"active": True}).sort("_id", ASCENDING).limit(limit)
        return [catalog_from_doc(doc) async for doc in cursor]

    # --- writes (inside a shared.mongo transaction) --------------------------------------

    async def insert_new(self, tx: Transaction, order: Order, idempotency: tuple[str, str] | None) -> None:
        """Store a new order; with (key, fingerprint), refuse a second order for the same key."""
        if idempotency is not None:
            key, fingerprint = idempotency
            try:
                await self._idempotency.insert_one(
                    {"_id": key, "order_id": order.order_id, "fingerprint": fingerprint},
                    session=tx.session,
                )
            except DuplicateKeyError:
                existing = await self._idempotency.find_one({"_id": key})
                if existing is None:  # lost a race with a writer that rolled back
                    raise
                raise IdempotencyConflict(existing["order_id"], existing["fingerprint"]) from None
        order.version = 1
        try:
            await self._orders.insert_one(order_to_doc(order), session=tx.session)
        except DuplicateKeyError as error:
            if "order_no" in str(error.details):
                raise OrderNumberTaken(order.order_no) from error
            raise

    async def save_changed(self, tx: Transaction, changed: Sequence[Order]) -> None:
        """Replace each order guarded by the version it was read at (optimistic concurrency)."""
        if not changed:
            return
        writes = []
        for order in changed:
            read_version = order.version
            order.version += 1
            writes.append(ReplaceOne({"_id": order.order_id, "version": read_version}, order_to_doc(order)))
        result = await self._orders.bulk_write(writes, ordered=False, session=tx.session)
        if result.matched_count != len(writes):
            raise ConcurrentUpdate(
                f"{len(writes) - result.matched_count} of {len(writes)} orders changed concurrently"
            )

    async def upsert_catalog(self, tx: Transaction, items: Sequence[CatalogItem]) -> None:
        if not items:
            return
        await self._catalog.bulk_write(
            [UpdateOne({"_id": item.sku}, {"$set": catalog_to_doc(item)}, upsert=True) for item in items],
            ordered=True,
            session=tx.session,
        )


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
        "reason": order.reason,
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
        reason=doc.get("reason"),
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

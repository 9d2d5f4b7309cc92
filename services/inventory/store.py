"""Where merchants, products and reservations live: the store protocol and its MongoDB implementation.

The in-memory twin for unit tests is tests/twins/inventory.py; tests/contract holds both to one suite.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.inventory.domain import (
    Changes,
    Merchant,
    MerchantAction,
    Product,
    Reservation,
    ReservationStatus,
    Slot,
    SlotKey,
    StatusChange,
)
from shared.contracts import (
    MAX_UNITS_PER_ORDER,
    MerchantStatus,
    PaymentMethod,
    PriceTier,
    ProductKind,
    ReservationEndReason,
    StockLine,
)
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite
from shared.mongo import Document, MongoStore, ServiceStore, TransactionView
from shared.store import EventStore, UnitOfWork

MERCHANTS = "merchants"
PRODUCTS = "products"
RESERVATIONS = "reservations"
SLOTS = "slots"
CANDIDATES_PER_MERCHANT = 10


class StockConflict(ConcurrentWrite):
    """Stock or a reservation changed since the batch read it (another replica); retry the batch."""


class StockTransaction(UnitOfWork, Protocol):
    """One atomic unit: reads see a consistent view, writes commit with the applied ids and outbox."""

    async def products(self, skus: Collection[str]) -> dict[str, Product]: ...

    async def substitute_candidates(
        self, merchant_ids: Collection[str], exclude: Collection[str]
    ) -> list[Product]:
        """The merchants' active products in stock, outside `exclude`: most stock first, then by sku;
        at most CANDIDATES_PER_MERCHANT per merchant asked about."""
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


class InventoryStore(EventStore[StockTransaction], Protocol):
    async def list_products(self, merchant_id: str | None = None) -> list[Product]: ...

    async def get_product(self, sku: str) -> Product | None: ...

    async def get_merchant(self, merchant_id: str) -> Merchant | None: ...

    async def list_merchants(self, status: MerchantStatus | None = None) -> list[Merchant]:
        """Every merchant by id, or those with `status`."""
        ...

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        """Every slot of the products, past ones too: by sku, then start, then slot id."""
        ...


# --- MongoDB ---------------------------------------------------------------------------------


class MongoInventoryStore(ServiceStore["_MongoTransaction"]):
    """Merchants' contacts are sealed at rest with `personal`."""

    def __init__(self, store: MongoStore, personal: PersonalData) -> None:
        self._documents = MerchantDocuments(personal)
        super().__init__(store, lambda tx: _MongoTransaction(tx, self._documents))
        self._merchants = store.db[MERCHANTS]
        self._products = store.db[PRODUCTS]
        self._reservations = store.db[RESERVATIONS]
        self._slots = store.db[SLOTS]

    async def ensure_indexes(self) -> None:
        await self._products.create_index([("merchant_id", ASCENDING), ("available", DESCENDING)])
        await self._reservations.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])
        await self._merchants.create_index([("status", ASCENDING), ("_id", ASCENDING)])
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

    async def list_slots(self, skus: Collection[str]) -> list[Slot]:
        cursor = self._slots.find({"sku": {"$in": list(skus)}}).sort(SLOT_ORDER)
        return [_slot(doc) async for doc in cursor]


@dataclass
class _MongoTransaction(TransactionView):
    _documents: MerchantDocuments

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        cursor = self.tx.db[PRODUCTS].find({"_id": {"$in": list(skus)}}, session=self.tx.session)
        return {doc["_id"]: _product(doc) async for doc in cursor}

    async def substitute_candidates(
        self, merchant_ids: Collection[str], exclude: Collection[str]
    ) -> list[Product]:
        cursor = (
            self.tx.db[PRODUCTS]
            .find(
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
                    "updated_at": now,
                },
                # Stock is set once, at creation; after that only `save`'s guarded increments move
                # it, so an edit cannot overwrite what the order consumer reserved meanwhile.
                "$setOnInsert": {"available": product.available, "reserved": 0, "created_at": now},
            },
            upsert=True,
            return_document=True,
            session=self.tx.session,
        )
        if doc is None:  # cannot happen with upsert + return_document; keeps the type honest
            raise StockConflict(f"product {product.sku} vanished while being written")
        return _product(doc)

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

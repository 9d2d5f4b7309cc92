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
    Coupon,
    CouponChanges,
    CouponTerms,
    CouponUse,
    CouponUseStatus,
    Merchant,
    MerchantAction,
    Product,
    Reservation,
    ReservationStatus,
    StatusChange,
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
from shared.mongo import Document, MongoStore, ServiceStore, TransactionView
from shared.store import EventStore, UnitOfWork

MERCHANTS = "merchants"
PRODUCTS = "products"
RESERVATIONS = "reservations"
COUPONS = "coupons"  # _id: code, with its use counters
COUPON_USES = "coupon_uses"  # _id: order id, the use of a coupon that order holds or held
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


class InventoryStore(EventStore[StockTransaction], Protocol):
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


# --- MongoDB ---------------------------------------------------------------------------------


class MongoInventoryStore(ServiceStore["_MongoTransaction"]):
    """Merchants' contacts are sealed at rest with `personal`."""

    def __init__(self, store: MongoStore, personal: PersonalData) -> None:
        self._documents = MerchantDocuments(personal)
        self._coupon_documents = CouponDocuments(personal)
        super().__init__(store, lambda tx: _MongoTransaction(tx, self._documents, self._coupon_documents))
        self._merchants = store.db[MERCHANTS]
        self._products = store.db[PRODUCTS]
        self._reservations = store.db[RESERVATIONS]
        self._coupons = store.db[COUPONS]
        self._coupon_uses = store.db[COUPON_USES]

    async def ensure_indexes(self) -> None:
        await self._products.create_index([("merchant_id", ASCENDING), ("available", DESCENDING)])
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


@dataclass
class _MongoTransaction(TransactionView):
    _documents: MerchantDocuments
    _coupon_documents: CouponDocuments

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
        lines=[StockLine(sku=line["sku"], quantity=line["quantity"]) for line in doc["lines"]],
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

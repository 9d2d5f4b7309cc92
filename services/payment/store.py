"""Where payments live: the store protocol, its MongoDB implementation and an in-memory twin for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pymongo import ASCENDING, ReplaceOne

from services.payment.domain import Payment, PaymentStatus, TimelineEntry
from shared.contracts import Envelope, PaymentMethod
from shared.errors import ConcurrentWrite
from shared.kafka import Delivery
from shared.memory import AppliedLedger, RecordingTransaction
from shared.mongo import Document, MongoStore, Transaction

PAYMENTS = "payments"


class ConcurrentUpdate(ConcurrentWrite):
    """Another writer changed a payment since it was read; the batch is retried on fresh state."""


class PaymentTransaction(Protocol):
    """One atomic write: payments, the ids of the events applied, the events caused."""

    def mark_applied(self, event_ids: Sequence[str]) -> None: ...

    def emit(self, envelopes: Sequence[Envelope]) -> None: ...

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None: ...


class PaymentStore(Protocol):
    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]: ...

    def transaction(self, consumer: str) -> AbstractAsyncContextManager[PaymentTransaction]: ...

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]: ...

    async def get(self, payment_id: str) -> Payment | None: ...


# --- MongoDB -------------------------------------------------------------------------------


@dataclass
class _MongoTransaction:
    tx: Transaction

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.tx.mark_applied(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.tx.emit(envelopes)

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        payments = self.tx.db[PAYMENTS]
        if new:
            for payment in new:
                payment.version = 1
            # A second payment for an order fails on the unique order_id index and rolls it all back.
            await payments.insert_many([payment_to_doc(p) for p in new], session=self.tx.session)
        if changed:
            writes = []
            for payment in changed:
                read_version = payment.version
                payment.version += 1
                writes.append(
                    ReplaceOne({"_id": payment.payment_id, "version": read_version}, payment_to_doc(payment))
                )
            result = await payments.bulk_write(writes, ordered=False, session=self.tx.session)
            if result.matched_count != len(writes):
                raise ConcurrentUpdate(
                    f"{len(writes) - result.matched_count} of {len(writes)} payments changed concurrently"
                )


class MongoPaymentStore:
    def __init__(self, store: MongoStore) -> None:
        self.base = store
        self._payments = store.db[PAYMENTS]

    async def ensure_indexes(self) -> None:
        await self._payments.create_index([("order_id", ASCENDING)], unique=True)

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return await self.base.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[PaymentTransaction]:
        async with self.base.transaction(consumer) as tx:
            yield _MongoTransaction(tx)

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        cursor = self._payments.find({"order_id": {"$in": list(set(order_ids))}})
        return {doc["order_id"]: payment_from_doc(doc) async for doc in cursor}

    async def get(self, payment_id: str) -> Payment | None:
        doc = await self._payments.find_one({"_id": payment_id})
        return None if doc is None else payment_from_doc(doc)


def payment_to_doc(payment: Payment) -> Document:
    return {
        "_id": payment.payment_id,
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
        "method": payment.method.value,
        "amount_fen": payment.amount_fen,
        "currency": payment.currency,
        "status": payment.status.value,
        "provider_ref": payment.provider_ref,
        "reason": payment.reason,
        "detail": payment.detail,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "timeline": [{"status": e.status.value, "at": e.at, "note": e.note} for e in payment.timeline],
        "version": payment.version,
    }


def payment_from_doc(doc: Mapping[str, Any]) -> Payment:
    return Payment(
        payment_id=doc["_id"],
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        method=PaymentMethod(doc["method"]),
        amount_fen=doc["amount_fen"],
        currency=doc["currency"],
        status=PaymentStatus(doc["status"]),
        provider_ref=doc.get("provider_ref"),
        reason=doc.get("reason"),
        detail=doc.get("detail", ""),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        timeline=[
            TimelineEntry(status=PaymentStatus(e["status"]), at=e["at"], note=e.get("note", ""))
            for e in doc["timeline"]
        ],
        version=doc["version"],
    )


# --- in memory (unit tests) ----------------------------------------------------------------


@dataclass
class _MemoryTransaction(RecordingTransaction):
    new: list[Payment] = field(default_factory=list)
    changed: list[Payment] = field(default_factory=list)

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        self.new.extend(new)
        self.changed.extend(changed)


@dataclass
class InMemoryPaymentStore:
    """Keeps the Mongo store's guarantees (all-or-nothing, unique order_id, versions) in dicts."""

    payments: dict[str, Payment] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    @property
    def outbox(self) -> list[Envelope]:
        return self.ledger.outbox

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return self.ledger.unapplied(consumer, deliveries)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[PaymentTransaction]:
        tx = _MemoryTransaction()
        yield tx
        applied = self.ledger.claim(consumer, tx)
        taken = {p.order_id for p in self.payments.values()}
        if any(p.order_id in taken or p.payment_id in self.payments for p in tx.new):
            raise ConcurrentUpdate("a payment for this order already exists")
        for payment in tx.changed:
            stored = self.payments.get(payment.payment_id)
            if stored is None or stored.version != payment.version:
                raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")
        for payment in tx.new:
            self.payments[payment.payment_id] = _copy(payment, version=1)
        for payment in tx.changed:
            self.payments[payment.payment_id] = _copy(payment, version=payment.version + 1)
        self.ledger.record(applied, tx)

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        wanted = set(order_ids)
        return {p.order_id: _copy(p) for p in self.payments.values() if p.order_id in wanted}

    async def get(self, payment_id: str) -> Payment | None:
        found = self.payments.get(payment_id)
        return None if found is None else _copy(found)


def _copy(payment: Payment, **changes: Any) -> Payment:
    # Readers get copies, as they would get fresh documents from Mongo.
    return replace(payment, timeline=list(payment.timeline), **changes)

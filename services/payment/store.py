"""Where payments live: the store protocol and its MongoDB implementation.

The in-memory twin for unit tests is tests/twins/payment.py; tests/contract/test_payment_store.py
holds both to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from pymongo import ASCENDING, ReplaceOne
from pymongo.errors import PyMongoError

from services.payment.domain import Payment, PaymentStatus, TimelineEntry
from shared.contracts import DeclineReason, OrderEndReason, PaymentMethod
from shared.errors import ConcurrentWrite
from shared.kafka import describe
from shared.mongo import Document, MongoStore, ServiceStore, TransactionView, is_duplicate_key
from shared.store import EventStore, UnitOfWork

PAYMENTS = "payments"


class ConcurrentUpdate(ConcurrentWrite):
    """Another writer changed a payment since it was read, or created the order's payment first;
    the batch is retried on fresh state."""


class PaymentTransaction(UnitOfWork, Protocol):
    """One atomic write: payments, the ids of the events applied, the events caused."""

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        """Insert `new` (version 1) and overwrite `changed` over the version each was read at.

        Raises ConcurrentUpdate when an order already has a payment or a changed payment is stale.
        The payments passed in are not modified: read them again to see their stored versions.
        """
        ...


class PaymentStore(EventStore[PaymentTransaction], Protocol):
    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        """The stored payment of each of these orders that has one, by order id."""
        ...

    async def get(self, payment_id: str) -> Payment | None: ...


class _MongoTransaction(TransactionView):
    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        payments = self.tx.db[PAYMENTS]
        if new:
            try:
                await payments.insert_many(
                    [payment_to_doc(p, version=1) for p in new], session=self.tx.session
                )
            except PyMongoError as error:
                if not is_duplicate_key(error):
                    raise
                # The unique order_id index refused a second payment for an order: another consumer
                # of the same request got there first, and a retry finds its payment.
                raise ConcurrentUpdate(f"a payment for this order exists: {describe(error)}") from error
        if changed:
            writes = [
                ReplaceOne(
                    {"_id": p.payment_id, "version": p.version}, payment_to_doc(p, version=p.version + 1)
                )
                for p in changed
            ]
            result = await payments.bulk_write(writes, ordered=False, session=self.tx.session)
            if result.matched_count != len(writes):
                raise ConcurrentUpdate(
                    f"{len(writes) - result.matched_count} of {len(writes)} payments changed concurrently"
                )


class MongoPaymentStore(ServiceStore[_MongoTransaction]):
    def __init__(self, store: MongoStore) -> None:
        super().__init__(store, _MongoTransaction)
        self._payments = store.db[PAYMENTS]

    async def ensure_indexes(self) -> None:
        await self._payments.create_index([("order_id", ASCENDING)], unique=True)

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        cursor = self._payments.find({"order_id": {"$in": list(set(order_ids))}})
        return {doc["order_id"]: payment_from_doc(doc) async for doc in cursor}

    async def get(self, payment_id: str) -> Payment | None:
        doc = await self._payments.find_one({"_id": payment_id})
        return None if doc is None else payment_from_doc(doc)


def payment_to_doc(payment: Payment, *, version: int) -> Document:
    return {
        "_id": payment.payment_id,
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
        "method": payment.method.value,
        "amount_fen": payment.amount_fen,
        "currency": payment.currency,
        "status": payment.status.value,
        "provider_ref": payment.provider_ref,
        "reason": None if payment.reason is None else payment.reason.value,
        "detail": payment.detail,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "timeline": [{"status": e.status.value, "at": e.at, "note": e.note} for e in payment.timeline],
        "version": version,
    }


def payment_from_doc(doc: Mapping[str, Any]) -> Payment:
    status = PaymentStatus(doc["status"])
    return Payment(
        payment_id=doc["_id"],
        order_id=doc["order_id"],
        customer_id=doc["customer_id"],
        method=PaymentMethod(doc["method"]),
        amount_fen=doc["amount_fen"],
        currency=doc["currency"],
        status=status,
        provider_ref=doc.get("provider_ref"),
        reason=_reason(status, doc.get("reason")),
        detail=doc.get("detail", ""),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        timeline=[
            TimelineEntry(status=PaymentStatus(e["status"]), at=e["at"], note=e.get("note", ""))
            for e in doc["timeline"]
        ],
        version=doc["version"],
    )


def _reason(status: PaymentStatus, code: str | None) -> DeclineReason | OrderEndReason | None:
    if code is None:
        return None
    # A voided payment keeps why its order ended; a failed one, the provider's decline.
    return OrderEndReason(code) if status is PaymentStatus.VOIDED else DeclineReason(code)

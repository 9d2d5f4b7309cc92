"""Where payments live: the store protocol and its MongoDB implementation.

Three collections: `payments` (one per order, versioned), `payment_operations` (the provider calls
decided and not yet answered, claimed by one worker at a time) and `callback_nonces` (the nonces of
the provider callbacks accepted, kept a while to refuse replays). The in-memory twin for unit tests
is tests/twins/payment.py; tests/contract/test_payment_store.py holds both to the same behaviour.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from pymongo import ASCENDING, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import PyMongoError

from services.payment.domain import (
    Operation,
    OperationKind,
    PayAction,
    Payment,
    PaymentStatus,
    Refund,
    RefundState,
    TimelineEntry,
)
from shared.contracts import DeclineReason, OrderEndReason, PayActionType, PaymentMethod, RefundReason
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite
from shared.kafka import describe
from shared.mongo import (
    Document,
    MongoStore,
    ServiceStore,
    TransactionView,
    ensure_ttl_index,
    is_duplicate_key,
)
from shared.store import EventStore, UnitOfWork

PAYMENTS = "payments"
OPERATIONS = "payment_operations"
NONCES = "callback_nonces"


class ConcurrentUpdate(ConcurrentWrite):
    """Another writer changed a payment since it was read, or created the order's payment first;
    the work is retried on fresh state."""


class ClaimLost(RuntimeError):
    """The operation is no longer held under this claim: it was finished or cancelled, or its lease
    ran out and another worker took it. Whoever holds it now stores its answer; this one is dropped."""


class CallbackReplayed(RuntimeError):
    """A callback whose nonce was accepted before: a replay, refused."""


class PaymentTransaction(UnitOfWork, Protocol):
    """One atomic write: payments, their operations, callback nonces, applied event ids, events caused."""

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        """Insert `new` (version 1) and overwrite `changed` over the version each was read at.

        Raises ConcurrentUpdate when an order already has a payment or a changed payment is stale.
        The payments passed in are not modified: read them again to see their stored versions.
        """
        ...

    async def add_operations(self, operations: Sequence[Operation]) -> None:
        """Queue these operations, unclaimed; one whose key is queued already stays as it is."""
        ...

    async def drop_operations(self, keys: Sequence[str]) -> None:
        """Delete the queued operations with these keys, claimed or not (a claimant's answer is then
        refused with ClaimLost); keys with no operation are passed over."""
        ...

    async def finish_operation(self, operation: Operation) -> None:
        """Delete the operation held under `operation.claim`; ClaimLost if it is not held so."""
        ...

    async def reschedule_operation(self, operation: Operation) -> None:
        """Store `operation`'s due time, attempts and last error and release its claim, so that it
        runs again when due; ClaimLost if it is not held under `operation.claim`."""
        ...

    async def record_nonce(self, nonce: str, at: datetime) -> None:
        """Remember an accepted callback's nonce; CallbackReplayed if it was accepted before."""
        ...


class PaymentStore(EventStore[PaymentTransaction], Protocol):
    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        """The stored payment of each of these orders that has one, by order id."""
        ...

    async def get(self, payment_id: str) -> Payment | None: ...

    async def pending_since(self, before: datetime, limit: int) -> list[Payment]:
        """Payments waiting for the payer (PENDING) unchanged since `before` or earlier, the oldest first."""
        ...

    async def claim_operations(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[Operation]:
        """Claim up to `limit` operations due at `now` that nobody holds (or whose holder's lease ran
        out), the earliest due first, until `now + lease`; each with a claim of its own."""
        ...

    async def operations(self, payment_id: str) -> list[Operation]:
        """The operations queued for a payment, by key."""
        ...


def new_claim(owner: str) -> str:
    """A claim token: the owner (for people reading the database) and a part unique to this claim."""
    return f"{owner}:{uuid.uuid4().hex}"


# --- MongoDB ---------------------------------------------------------------------------------------


@dataclass
class _MongoTransaction(TransactionView):
    documents: PaymentDocuments

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        payments = self.tx.db[PAYMENTS]
        documents = self.documents
        if new:
            try:
                await payments.insert_many(
                    [documents.to_doc(p, version=1) for p in new], session=self.tx.session
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
                    {"_id": p.payment_id, "version": p.version}, documents.to_doc(p, version=p.version + 1)
                )
                for p in changed
            ]
            result = await payments.bulk_write(writes, ordered=False, session=self.tx.session)
            if result.matched_count != len(writes):
                raise ConcurrentUpdate(
                    f"{len(writes) - result.matched_count} of {len(writes)} payments changed concurrently"
                )

    async def add_operations(self, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        writes = [
            UpdateOne(
                {"_id": op.key},
                {"$setOnInsert": {k: v for k, v in operation_to_doc(op).items() if k != "_id"}},
                upsert=True,
            )
            for op in operations
        ]
        await self.tx.db[OPERATIONS].bulk_write(writes, ordered=False, session=self.tx.session)

    async def drop_operations(self, keys: Sequence[str]) -> None:
        if keys:
            await self.tx.db[OPERATIONS].delete_many({"_id": {"$in": list(keys)}}, session=self.tx.session)

    async def finish_operation(self, operation: Operation) -> None:
        result = await self.tx.db[OPERATIONS].delete_one(
            {"_id": operation.key, "claim": operation.claim}, session=self.tx.session
        )
        if result.deleted_count != 1:
            raise ClaimLost(f"operation {operation.key} is no longer held under this claim")

    async def reschedule_operation(self, operation: Operation) -> None:
        result = await self.tx.db[OPERATIONS].update_one(
            {"_id": operation.key, "claim": operation.claim},
            {
                "$set": {
                    "due_at": operation.due_at,
                    "attempts": operation.attempts,
                    "last_error": operation.last_error,
                    "claim": None,
                    "claim_until": None,
                }
            },
            session=self.tx.session,
        )
        if result.matched_count != 1:
            raise ClaimLost(f"operation {operation.key} is no longer held under this claim")

    async def record_nonce(self, nonce: str, at: datetime) -> None:
        try:
            await self.tx.db[NONCES].insert_one({"_id": nonce, "at": at}, session=self.tx.session)
        except PyMongoError as error:
            if not is_duplicate_key(error):
                raise
            raise CallbackReplayed("this callback's nonce was accepted before") from error


class MongoPaymentStore(ServiceStore[_MongoTransaction]):
    def __init__(self, store: MongoStore, personal: PersonalData) -> None:
        self.documents = PaymentDocuments(personal)
        super().__init__(store, partial(_MongoTransaction, documents=self.documents))
        self._payments = store.db[PAYMENTS]
        self._operations = store.db[OPERATIONS]
        self._nonces = store.db[NONCES]

    async def ensure_indexes(self, *, nonce_ttl_s: float) -> None:
        await self._payments.create_index([("order_id", ASCENDING)], unique=True)
        await self._payments.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        await self._operations.create_index([("due_at", ASCENDING)])
        await self._operations.create_index([("payment_id", ASCENDING)])
        await ensure_ttl_index(self._nonces, "at", nonce_ttl_s)

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        cursor = self._payments.find({"order_id": {"$in": list(set(order_ids))}})
        return {doc["order_id"]: self.documents.from_doc(doc) async for doc in cursor}

    async def get(self, payment_id: str) -> Payment | None:
        doc = await self._payments.find_one({"_id": payment_id})
        return None if doc is None else self.documents.from_doc(doc)

    async def pending_since(self, before: datetime, limit: int) -> list[Payment]:
        cursor = (
            self._payments.find({"status": PaymentStatus.PENDING.value, "updated_at": {"$lte": before}})
            .sort("updated_at", ASCENDING)
            .limit(limit)
        )
        return [self.documents.from_doc(doc) async for doc in cursor]

    async def claim_operations(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[Operation]:
        claimable: Document = {
            "due_at": {"$lte": now},
            "$or": [{"claim_until": None}, {"claim_until": {"$lte": now}}],
        }
        candidates = self._operations.find(claimable, {"_id": 1}).sort("due_at", ASCENDING).limit(limit)
        claimed: list[Operation] = []
        async for candidate in candidates:
            # Claimed one by one, each only if still claimable: a replica that read the same
            # candidates claims only those this one did not take first.
            doc = await self._operations.find_one_and_update(
                {"_id": candidate["_id"], **claimable},
                {"$set": {"claim": new_claim(owner), "claim_until": now + lease}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                claimed.append(operation_from_doc(doc))
        return claimed

    async def operations(self, payment_id: str) -> list[Operation]:
        cursor = self._operations.find({"payment_id": payment_id}).sort("_id", ASCENDING)
        return [operation_from_doc(doc) async for doc in cursor]


class PaymentDocuments:
    """Payments as MongoDB documents; the provider's reference is sealed at rest."""

    def __init__(self, personal: PersonalData) -> None:
        self._personal = personal

    def to_doc(self, payment: Payment, *, version: int) -> Document:
        return {
            "_id": payment.payment_id,
            "order_id": payment.order_id,
            "customer_id": payment.customer_id,
            "method": payment.method.value,
            "amount_fen": payment.amount_fen,
            "currency": payment.currency,
            "correlation_id": payment.correlation_id,
            "status": payment.status.value,
            "provider_ref": None
            if payment.provider_ref is None
            else self._personal.seal(payment.provider_ref),
            # The pay page's URL carries the provider's reference, so it is sealed like the reference.
            "action": None
            if payment.action is None
            else {"type": payment.action.type.value, "sealed_url": self._personal.seal(payment.action.url)},
            "reason": None if payment.reason is None else payment.reason.value,
            "detail": payment.detail,
            "captured_fen": payment.captured_fen,
            "refunded_fen": payment.refunded_fen,
            "refunds": [
                {
                    "refund_id": r.refund_id,
                    "amount_fen": r.amount_fen,
                    "reason": r.reason.value,
                    "detail": r.detail,
                    "state": r.state.value,
                    "requested_at": r.requested_at,
                }
                for r in payment.refunds
            ],
            "capturing": payment.capturing,
            "order_ended": None if payment.order_ended is None else payment.order_ended.value,
            "giving_back": payment.giving_back,
            "notices": list(payment.notices),
            "created_at": payment.created_at,
            "updated_at": payment.updated_at,
            "timeline": [{"status": e.status.value, "at": e.at, "note": e.note} for e in payment.timeline],
            "version": version,
        }

    def from_doc(self, doc: Mapping[str, Any]) -> Payment:
        status = PaymentStatus(doc["status"])
        sealed_ref = doc.get("provider_ref")
        action = doc.get("action")
        order_ended = doc.get("order_ended")
        return Payment(
            payment_id=doc["_id"],
            order_id=doc["order_id"],
            customer_id=doc["customer_id"],
            method=PaymentMethod(doc["method"]),
            amount_fen=doc["amount_fen"],
            currency=doc["currency"],
            # Payments stored before correlation ids were kept fall back to their order id.
            correlation_id=doc.get("correlation_id") or doc["order_id"],
            status=status,
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            provider_ref=None if sealed_ref is None else self._personal.open(sealed_ref),
            action=None
            if action is None
            else PayAction(PayActionType(action["type"]), self._personal.open(action["sealed_url"])),
            reason=_reason(status, doc.get("reason")),
            detail=doc.get("detail", ""),
            captured_fen=doc.get("captured_fen", 0),
            refunded_fen=doc.get("refunded_fen", 0),
            refunds=[
                Refund(
                    refund_id=r["refund_id"],
                    amount_fen=r["amount_fen"],
                    reason=RefundReason(r["reason"]),
                    detail=r.get("detail", ""),
                    state=RefundState(r["state"]),
                    requested_at=r["requested_at"],
                )
                for r in doc.get("refunds", [])
            ],
            capturing=doc.get("capturing", False),
            order_ended=None if order_ended is None else OrderEndReason(order_ended),
            giving_back=doc.get("giving_back", False),
            notices=list(doc.get("notices", [])),
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


def operation_to_doc(operation: Operation) -> Document:
    return {
        "_id": operation.key,
        "kind": operation.kind.value,
        "payment_id": operation.payment_id,
        "method": operation.method.value,
        "due_at": operation.due_at,
        "attempts": operation.attempts,
        "deadline_at": operation.deadline_at,
        # Sealed by the gateway for this service only, and deleted with the operation once answered.
        "sealed_token": operation.sealed_token,
        "amount_fen": operation.amount_fen,
        "announce": operation.announce,
        "late": operation.late,
        "refund_reason": None if operation.refund_reason is None else operation.refund_reason.value,
        "detail": operation.detail,
        "last_error": operation.last_error,
        "claim": operation.claim,
        "claim_until": operation.claim_until,
    }


def operation_from_doc(doc: Mapping[str, Any]) -> Operation:
    refund_reason = doc.get("refund_reason")
    return Operation(
        key=doc["_id"],
        kind=OperationKind(doc["kind"]),
        payment_id=doc["payment_id"],
        method=PaymentMethod(doc["method"]),
        due_at=doc["due_at"],
        attempts=doc.get("attempts", 0),
        deadline_at=doc.get("deadline_at"),
        sealed_token=doc.get("sealed_token"),
        amount_fen=doc.get("amount_fen", 0),
        announce=doc.get("announce", False),
        late=doc.get("late", False),
        refund_reason=None if refund_reason is None else RefundReason(refund_reason),
        detail=doc.get("detail", ""),
        last_error=doc.get("last_error", ""),
        claim=doc.get("claim"),
        claim_until=doc.get("claim_until"),
    )

"""The payment store's in-memory twin: services.payment.store.PaymentStore kept in dicts.

tests/contract/test_payment_store.py runs the same suite against this and the Mongo store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.payment.domain import Operation, Payment, PaymentStatus
from services.payment.store import (
    CallbackReplayed,
    ClaimLost,
    ConcurrentUpdate,
    PaymentTransaction,
    new_claim,
)
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass
class _MemoryTransaction(PendingWrites):
    """What one transaction will write; checked against the store as Mongo would, when called."""

    store: InMemoryPaymentStore | None = None
    new: list[Payment] = field(default_factory=list)
    changed: list[Payment] = field(default_factory=list)
    added: list[Operation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    finished: list[Operation] = field(default_factory=list)
    rescheduled: list[Operation] = field(default_factory=list)
    nonces: dict[str, datetime] = field(default_factory=dict)

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        # Copies: the Mongo store writes documents at this point, so later changes to these
        # objects do not reach what it commits.
        self.new.extend(_copy(p) for p in new)
        self.changed.extend(_copy(p) for p in changed)
        self._store().refuse_conflicting_payments(self)

    async def add_operations(self, operations: Sequence[Operation]) -> None:
        self.added.extend(operations)

    async def drop_operations(self, keys: Sequence[str]) -> None:
        self.dropped.extend(keys)

    async def finish_operation(self, operation: Operation) -> None:
        self._store().refuse_lost_claim(self, operation)
        self.finished.append(operation)

    async def reschedule_operation(self, operation: Operation) -> None:
        self._store().refuse_lost_claim(self, operation)
        self.rescheduled.append(operation)

    async def record_nonce(self, nonce: str, at: datetime) -> None:
        if nonce in self._store().nonces or nonce in self.nonces:
            raise CallbackReplayed("this callback's nonce was accepted before")
        self.nonces[nonce] = at

    def _store(self) -> InMemoryPaymentStore:
        if self.store is None:
            raise AssertionError("a transaction outside its store")
        return self.store


@dataclass
class InMemoryPaymentStore(LedgerTwin):
    """Keeps the Mongo store's guarantees (all-or-nothing, unique order_id, versions, claims) in dicts."""

    payments: dict[str, Payment] = field(default_factory=dict)
    queued: dict[str, Operation] = field(default_factory=dict)
    nonces: dict[str, datetime] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[PaymentTransaction]:
        tx = _MemoryTransaction(store=self)
        yield tx
        # Checked again at commit: another task may have written since the body's checks.
        self.refuse_conflicting_payments(tx)
        for operation in [*tx.finished, *tx.rescheduled]:
            self.refuse_lost_claim(tx, operation)
        for nonce in tx.nonces:
            if nonce in self.nonces:
                raise CallbackReplayed("this callback's nonce was accepted before")
        applied = self.ledger.claim(consumer, tx)
        for payment in tx.new:
            self.payments[payment.payment_id] = _copy(payment, version=1)
        for payment in tx.changed:
            self.payments[payment.payment_id] = _copy(payment, version=payment.version + 1)
        for key in tx.dropped:
            self.queued.pop(key, None)
        for operation in tx.added:
            self.queued.setdefault(operation.key, replace(operation, claim=None, claim_until=None))
        for operation in tx.finished:
            del self.queued[operation.key]
        for operation in tx.rescheduled:
            self.queued[operation.key] = replace(
                self.queued[operation.key],
                due_at=operation.due_at,
                attempts=operation.attempts,
                last_error=operation.last_error,
                claim=None,
                claim_until=None,
            )
        self.nonces.update(tx.nonces)
        self.ledger.record(applied, tx)

    def refuse_conflicting_payments(self, tx: _MemoryTransaction) -> None:
        """Raise as the unique indexes and the version filter would, before anything changes."""
        order_ids = {p.order_id for p in self.payments.values()}
        payment_ids = set(self.payments)
        for payment in tx.new:
            if payment.order_id in order_ids or payment.payment_id in payment_ids:
                raise ConcurrentUpdate(f"a payment for order {payment.order_id} exists")
            order_ids.add(payment.order_id)
            payment_ids.add(payment.payment_id)
        for payment in tx.changed:
            stored = self.payments.get(payment.payment_id)
            if stored is None or stored.version != payment.version:
                raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")

    def refuse_lost_claim(self, tx: _MemoryTransaction, operation: Operation) -> None:
        queued = self.queued.get(operation.key)
        if queued is None or queued.claim != operation.claim or operation.key in tx.dropped:
            raise ClaimLost(f"operation {operation.key} is no longer held under this claim")
        if any(
            done.key == operation.key for done in [*tx.finished, *tx.rescheduled] if done is not operation
        ):
            raise ClaimLost(f"operation {operation.key} is no longer held under this claim")

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        wanted = set(order_ids)
        return {p.order_id: _copy(p) for p in self.payments.values() if p.order_id in wanted}

    async def get(self, payment_id: str) -> Payment | None:
        found = self.payments.get(payment_id)
        return None if found is None else _copy(found)

    async def pending_since(self, before: datetime, limit: int) -> list[Payment]:
        waiting = [
            p for p in self.payments.values() if p.status is PaymentStatus.PENDING and p.updated_at <= before
        ]
        return [_copy(p) for p in sorted(waiting, key=lambda p: p.updated_at)[:limit]]

    async def claim_operations(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[Operation]:
        due = sorted(
            (
                op
                for op in self.queued.values()
                if op.due_at <= now and (op.claim_until is None or op.claim_until <= now)
            ),
            key=lambda op: op.due_at,
        )
        claimed = []
        for operation in due[:limit]:
            held = replace(operation, claim=new_claim(owner), claim_until=now + lease)
            self.queued[operation.key] = held
            claimed.append(held)
        return claimed

    async def operations(self, payment_id: str) -> list[Operation]:
        return sorted(
            (op for op in self.queued.values() if op.payment_id == payment_id), key=lambda op: op.key
        )


def _copy(payment: Payment, **changes: Any) -> Payment:
    # Readers get copies, as they would get fresh documents from Mongo.
    return replace(
        payment,
        timeline=list(payment.timeline),
        refunds=list(payment.refunds),
        notices=list(payment.notices),
        **changes,
    )

"""The payment store's in-memory twin: services.payment.store.PaymentStore kept in dicts.

tests/contract/test_payment_store.py runs the same suite against this and the Mongo store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from services.payment.domain import Payment
from services.payment.store import ConcurrentUpdate, PaymentTransaction
from shared.store import PendingWrites
from tests.twins.ledger import AppliedLedger, LedgerTwin


@dataclass
class _MemoryTransaction(PendingWrites):
    new: list[Payment] = field(default_factory=list)
    changed: list[Payment] = field(default_factory=list)

    async def save(self, *, new: Sequence[Payment], changed: Sequence[Payment]) -> None:
        # Copies: the Mongo store writes documents at this point, so later changes to these
        # objects do not reach what it commits.
        self.new.extend(_copy(p) for p in new)
        self.changed.extend(_copy(p) for p in changed)


@dataclass
class InMemoryPaymentStore(LedgerTwin):
    """Keeps the Mongo store's guarantees (all-or-nothing, unique order_id, versions) in dicts."""

    payments: dict[str, Payment] = field(default_factory=dict)
    ledger: AppliedLedger = field(default_factory=AppliedLedger)

    @asynccontextmanager
    async def transaction(self, consumer: str) -> AsyncIterator[PaymentTransaction]:
        tx = _MemoryTransaction()
        yield tx
        self._refuse_conflicts(tx)
        applied = self.ledger.claim(consumer, tx)
        for payment in tx.new:
            self.payments[payment.payment_id] = _copy(payment, version=1)
        for payment in tx.changed:
            self.payments[payment.payment_id] = _copy(payment, version=payment.version + 1)
        self.ledger.record(applied, tx)

    def _refuse_conflicts(self, tx: _MemoryTransaction) -> None:
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

    async def for_orders(self, order_ids: Iterable[str]) -> dict[str, Payment]:
        wanted = set(order_ids)
        return {p.order_id: _copy(p) for p in self.payments.values() if p.order_id in wanted}

    async def get(self, payment_id: str) -> Payment | None:
        found = self.payments.get(payment_id)
        return None if found is None else _copy(found)


def _copy(payment: Payment, **changes: Any) -> Payment:
    # Readers get copies, as they would get fresh documents from Mongo.
    return replace(payment, timeline=list(payment.timeline), **changes)

"""The in-memory twin of shared.mongo's bookkeeping, for handler unit tests without a database.

Each service's in-memory store keeps its own state; this keeps the part every store shares: which
events were applied (refusing a second apply as the unique index would) and the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.contracts.base import Envelope
from shared.errors import ConcurrentWrite
from shared.kafka import Delivery, first_unseen
from shared.store import PendingWrites


@dataclass
class AppliedLedger:
    processed: set[str] = field(default_factory=set)
    outbox: list[Envelope] = field(default_factory=list)

    def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        fresh, _ = first_unseen(consumer, deliveries, self.processed)
        return fresh

    def claim(self, consumer: str, tx: PendingWrites) -> set[str]:
        """The processed keys `tx` would add; raises as the unique index would on a second apply.

        Call before changing the store's state, then `record` after."""
        keys = {f"{consumer}:{event_id}" for event_id in tx.applied}
        if keys & self.processed or len(keys) != len(tx.applied):
            raise ConcurrentWrite("an event was applied twice")
        return keys

    def record(self, keys: set[str], tx: PendingWrites) -> None:
        self.processed |= keys
        self.outbox.extend(tx.outgoing)


class LedgerTwin:
    """Base of the in-memory store twins: applied ids and the outbox live in `ledger`."""

    ledger: AppliedLedger

    @property
    def outbox(self) -> list[Envelope]:
        return self.ledger.outbox

    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return self.ledger.unapplied(consumer, deliveries)

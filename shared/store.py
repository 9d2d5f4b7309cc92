"""What every service's store offers its handlers: apply-once bookkeeping and the outbox, in one write.

A handler reads through its store, decides in memory, then opens `store.transaction(consumer)` and
writes its changes, marks the events it applied and emits the events it caused; the store commits
all of it together or nothing. The Mongo implementation is in shared/mongo.py; each service's store
Protocol extends these two with its own reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from shared.contracts import Envelope
from shared.kafka import Delivery


class UnitOfWork(Protocol):
    def mark_applied(self, event_ids: Sequence[str]) -> None:
        """Record these events as applied by this consumer, in the same write as the changes."""
        ...

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        """Put these events in the outbox, in the same write as the changes."""
        ...


Tx_co = TypeVar("Tx_co", bound=UnitOfWork, covariant=True)


class EventStore(Protocol[Tx_co]):
    async def unapplied(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries `consumer` has not applied yet (redeliveries dropped, first copy wins)."""
        ...

    def transaction(self, consumer: str) -> AbstractAsyncContextManager[Tx_co]:
        """One atomic write of the caller's changes, the applied event ids and the emitted events."""
        ...


@dataclass
class PendingWrites:
    """What a unit of work marked and emitted, kept until its store commits it."""

    applied: list[str] = field(default_factory=list)
    outgoing: list[Envelope] = field(default_factory=list)

    def mark_applied(self, event_ids: Sequence[str]) -> None:
        self.applied.extend(event_ids)

    def emit(self, envelopes: Sequence[Envelope]) -> None:
        self.outgoing.extend(envelopes)

"""One handler convention for every service.

A handler is `handler(batch, event, cause) -> None`: it applies one typed event to the service's
in-memory view of a consumed batch (`batch`, loaded from the store beforehand) and records there
what changed and which events it causes. It does no I/O, so a whole batch is decided in memory and
stored in one write. Each service lists its handlers once, at the bottom of its handlers.py:

    HANDLERS = Handlers[Batch]().on(StockReserved, on_stock_reserved).on(...)

and applies a batch with `HANDLERS.dispatch(batch, deliveries)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared.contracts import Envelope, Event
from shared.kafka import Delivery, reply_to

B = TypeVar("B")
E = TypeVar("E", bound=Event)


class Handlers(Generic[B]):
    """Event type → the handler that applies it to a batch view of type B."""

    def __init__(self) -> None:
        self._by_type: dict[type[Event], Callable[[B, Any, Envelope], None]] = {}

    def on(self, event_type: type[E], handler: Callable[[B, E, Envelope], None]) -> Handlers[B]:
        """Register `handler` for `event_type`; the handler's event parameter is typed by it."""
        if event_type in self._by_type:
            raise ValueError(f"{event_type.TYPE} has a handler already")
        self._by_type[event_type] = handler
        return self

    @property
    def event_types(self) -> frozenset[type[Event]]:
        return frozenset(self._by_type)

    def handles(self, delivery: Delivery) -> bool:
        return type(delivery.event) in self._by_type

    def relevant(self, deliveries: Iterable[Delivery]) -> list[Delivery]:
        """The deliveries this service has a handler for. The others change nothing here, so they
        are not recorded as applied either: their offsets are committed and that is all."""
        return [delivery for delivery in deliveries if type(delivery.event) in self._by_type]

    def dispatch(self, batch: B, deliveries: Iterable[Delivery]) -> None:
        """Apply each event to `batch` in delivery order; events with no handler are passed over."""
        for delivery in deliveries:
            handler = self._by_type.get(type(delivery.event))
            if handler is not None:
                handler(batch, delivery.event, delivery.envelope)


@dataclass
class Replies:
    """The events a batch's handlers cause, each an answer to the event that caused it.

    Ids derive from the cause (see shared.kafka.reply_to), so deciding the same cause twice emits
    the same events, which every consumer applies once."""

    source: str
    outgoing: list[Envelope] = field(default_factory=list)

    def reply(self, cause: Envelope, events: Iterable[Event]) -> None:
        self.outgoing.extend(reply_to(cause, event, source=self.source) for event in events)

"""The order events as an analyst reads them: a plain consumer of `order.events`, no group, no commits.

It remembers, per order id, the distinct event ids and envelope times of the events that place and
end an order, so that latency comes from event times and duplicates can be told from republishes
(the outbox relay may publish the same event id twice; consumers apply it once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contracts import OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, topics

ENDINGS = {
    OrderConfirmed.TYPE: "confirmed",
    OrderRejected.TYPE: "rejected",
    OrderCancelled.TYPE: "cancelled",
}


@dataclass
class OrderTrail:
    placed: dict[str, datetime] = field(default_factory=dict)  # event id -> envelope time
    customer_id: str | None = None
    # outcome ("confirmed", "rejected", "cancelled") -> event id -> envelope time
    endings: dict[str, dict[str, datetime]] = field(default_factory=lambda: defaultdict(dict))
    confirmed_units: int = 0

    @property
    def outcomes(self) -> list[str]:
        return [outcome for outcome, events in self.endings.items() if events]

    @property
    def placed_at(self) -> datetime | None:
        return min(self.placed.values(), default=None)

    @property
    def confirmed_at(self) -> datetime | None:
        return min(self.endings["confirmed"].values(), default=None)


class OrderEventsTap:
    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        self.trails: dict[str, OrderTrail] = {}
        self.orders_of_customer: dict[str, set[str]] = {}
        self.unreadable = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow `order.events` from its current end: only what happens from now on."""
        await self._consumer.start()
        await self._consumer.topics()
        partitions = [
            TopicPartition(topics.ORDER_EVENTS, partition)
            for partition in sorted(self._consumer.partitions_for_topic(topics.ORDER_EVENTS) or ())
        ]
        if not partitions:
            raise RuntimeError(f"topic {topics.ORDER_EVENTS} does not exist: are the services up?")
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    self._read(record.value)

    def _read(self, value: bytes | None) -> None:
        try:
            envelope: dict[str, Any] = orjson.loads(value or b"")
            kind = envelope["type"]
            if kind != OrderPlaced.TYPE and kind not in ENDINGS:
                return
            data = envelope["data"]
            trail = self.trails.setdefault(data["order_id"], OrderTrail())
            at = datetime.fromisoformat(envelope["time"])
            event_id = envelope["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.unreadable += 1
            return
        if kind == OrderPlaced.TYPE:
            trail.placed[event_id] = at
            trail.customer_id = data.get("customer_id")
            self.orders_of_customer.setdefault(str(trail.customer_id), set()).add(data["order_id"])
            return
        outcome = ENDINGS[kind]
        if outcome == "confirmed" and not trail.endings["confirmed"]:
            trail.confirmed_units = sum(int(line["quantity"]) for line in data.get("lines", []))
        trail.endings[outcome][event_id] = at

    def trail(self, order_id: str) -> OrderTrail:
        """What was seen of an order so far (an empty trail if nothing)."""
        return self.trails.get(order_id) or OrderTrail()

    def open_orders(self, order_ids: Iterable[str]) -> list[str]:
        return [order_id for order_id in order_ids if not self.trail(order_id).outcomes]

    async def wait_settled(self, order_ids: Callable[[], list[str]], timeout_s: float) -> list[str]:
        """Wait until every order of `order_ids()` (asked again each time: more may show up) has an
        outcome on `order.events`; the ones still open at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            still_open = self.open_orders(order_ids())
            if not still_open or time.monotonic() > deadline:
                return still_open
            await asyncio.sleep(0.1)

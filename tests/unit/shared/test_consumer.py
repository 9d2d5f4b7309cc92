"""The consumer loop's promises: commit after the work, poison to the DLQ, transient failures retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.contracts import FraudDecision, FraudScored
from shared.errors import ConcurrentWrite, is_transient
from shared.kafka import BatchConsumer, Delivery, encode, headers_for, new_envelope
from shared.settings import SharedSettings

pytestmark = pytest.mark.unit


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeConsumer:
    """Hands out one batch, then signals stop; records commits."""

    batch: list[Record]
    done: asyncio.Event
    commits: int = 0
    stopped: bool = False

    async def start(self) -> None:
        pass

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        if self.batch:
            batch, self.batch = self.batch, []
            return {"tp": batch}
        self.done.set()
        return {}

    async def commit(self) -> None:
        self.commits += 1

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> None:
        self.sent.append((topic, value, list(headers)))


def record(offset: int, order_id: str) -> Record:
    env = new_envelope(
        FraudScored(order_id=order_id, decision=FraudDecision.APPROVE, score=1),
        source="t",
        correlation_id="c",
    )
    return Record("fraud.events", 0, offset, order_id.encode(), encode(env), headers_for(env))


async def run(records: list[Record], handle: Any) -> tuple[FakeConsumer, FakeProducer]:
    stop = asyncio.Event()
    consumer = FakeConsumer(records, stop)
    producer = FakeProducer()
    loop = BatchConsumer(
        service="test",
        consumer=consumer,
        producer=producer,
        handle=handle,
        settings=SharedSettings(handler_max_attempts=2),
        is_transient=is_transient,
    )
    await asyncio.wait_for(loop.run(stop), 10)
    return consumer, producer


async def test_a_poison_event_is_dead_lettered_and_the_good_ones_applied() -> None:
    applied: list[str] = []

    async def handle(batch: Sequence[Delivery]) -> None:
        if any(d.envelope.subject == "poison" for d in batch):
            raise ValueError("cannot apply")
        applied.extend(d.envelope.subject for d in batch)

    garbage = Record("fraud.events", 0, 3, b"g", b"not json", [("origin", b"x")])
    consumer, producer = await run([record(1, "good-1"), record(2, "poison"), garbage], handle)

    assert applied == ["good-1"]
    assert sorted(topic for topic, _, _ in producer.sent) == ["fraud.events.dlq"] * 2
    dead = {dict(headers)["dlq_source_offset"]: dict(headers) for _, _, headers in producer.sent}
    assert b"cannot apply" in dead[b"2"]["dlq_error"]
    assert dead[b"3"]["origin"] == b"x", "the original headers travel with the dead letter"
    assert consumer.commits == 1 and consumer.stopped


async def test_a_transient_failure_is_retried_until_it_passes_never_dead_lettered() -> None:
    failures = iter([ConcurrentWrite("lost a race")] * 4)

    async def handle(batch: Sequence[Delivery]) -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    consumer, producer = await run([record(1, "o-1")], handle)

    assert producer.sent == []
    assert consumer.commits == 1

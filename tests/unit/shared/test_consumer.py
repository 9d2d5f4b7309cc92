"""The consumer loop's promises: commit after the work, poison to the DLQ, transient failures retried,
and no record, whatever its bytes and headers, can make it raise."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts import REGISTRY, FraudDecision, FraudScored
from shared.errors import ConcurrentWrite, DependencyLost, is_transient
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
    headers: list[tuple[str, bytes | None]]


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
    """Records what it sends; the first `failures` sends fail as an unreachable broker would."""

    sent: list[tuple[str, bytes, list[tuple[str, bytes | None]]]] = field(default_factory=list)
    failures: int = 0

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None, headers: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("broker unreachable")
        self.sent.append((topic, value, list(headers)))


def record(offset: int, order_id: str) -> Record:
    env = new_envelope(
        FraudScored(order_id=order_id, decision=FraudDecision.APPROVE, score=1),
        source="t",
        correlation_id="c",
    )
    return Record("fraud.events", 0, offset, order_id.encode(), encode(env), headers_for(env))


async def run(
    records: list[Record],
    handle: Any,
    *,
    producer: FakeProducer | None = None,
    outage_limit_s: float = 60.0,
) -> tuple[FakeConsumer, FakeProducer]:
    stop = asyncio.Event()
    consumer = FakeConsumer(records, stop)
    producer = producer or FakeProducer()
    loop = BatchConsumer(
        service="test",
        consumer=consumer,
        producer=producer,
        handle=handle,
        settings=SharedSettings(handler_max_attempts=2, dependency_outage_limit_s=outage_limit_s),
        is_transient=is_transient,
    )
    await asyncio.wait_for(loop.run(stop), 10)
    return consumer, producer


def raw(offset: int, value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None) -> Record:
    return Record("order.events", 0, offset, b"k", value, headers or [])


def envelope_bytes(**changes: Any) -> bytes:
    """A valid order.placed-shaped envelope with some fields changed."""
    body: dict[str, Any] = {
        "id": "e-1",
        "type": "fraud.scored",
        "version": 1,
        "source": "test",
        "time": "2026-11-26T00:00:00Z",
        "subject": "o-1",
        "correlation_id": "c",
        "causation_id": None,
        "data": {"order_id": "o-1", "decision": "approve", "score": 1},
    }
    return orjson.dumps({**body, **changes})


async def accept(batch: Sequence[Delivery]) -> None:
    pass


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
    assert b"cannot apply" in (dead[b"2"]["dlq_error"] or b"")
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


async def test_every_kind_of_bad_record_is_dead_lettered_with_its_error_and_headers() -> None:
    nested = b"[" * 5000 + b"]" * 5000
    bad = {
        "version 0": envelope_bytes(version=0),
        "version -5": envelope_bytes(version=-5),
        "unknown type": envelope_bytes(type="order.teleported"),
        "invalid data": envelope_bytes(data={"order_id": "o-1", "decision": "maybe", "score": 500}),
        "garbage": b"\x00\xff not an event",
        "nested": nested,
        "no value": None,
        "a list": b"[1, 2, 3]",
    }
    records = [
        raw(i, value, [("origin", name.encode()), ("empty", None)])
        for i, (name, value) in enumerate(bad.items())
    ]
    records.append(raw(len(records), envelope_bytes(), [("trace", None)]))
    applied: list[str] = []

    async def handle(batch: Sequence[Delivery]) -> None:
        applied.extend(d.envelope.id for d in batch)

    consumer, producer = await run(records, handle)

    assert applied == ["e-1"], "the good record after the bad ones is still applied"
    assert len(producer.sent) == len(bad)
    for (topic, _, headers), name in zip(producer.sent, bad, strict=True):
        found = dict(headers)
        assert topic == "order.events.dlq"
        assert found["origin"] == name.encode() and found["empty"] is None, "original headers kept"
        assert found["dlq_error"], f"{name}: the dead letter says why"
    errors = {dict(h)["origin"]: dict(h)["dlq_error"] or b"" for _, _, h in producer.sent}
    assert b"versions start at 1" in errors[b"version 0"] and b"versions start at 1" in errors[b"version -5"]
    assert b"unknown event type" in errors[b"unknown type"]
    assert b"decision" in errors[b"invalid data"] and b"maybe" not in errors[b"invalid data"], (
        "validation errors name the field, never quote the (possibly personal) value"
    )
    assert consumer.commits == 1


async def test_a_broker_outage_while_dead_lettering_is_waited_out() -> None:
    producer = FakeProducer(failures=2)

    consumer, _ = await run([raw(0, b"garbage")], accept, producer=producer)

    assert [topic for topic, _, _ in producer.sent] == ["order.events.dlq"]
    assert consumer.commits == 1


async def test_a_transient_failure_that_outlasts_the_limit_gives_up_without_committing() -> None:
    async def always_conflicting(batch: Sequence[Delivery]) -> None:
        raise ConcurrentWrite("still locked")

    with pytest.raises(DependencyLost, match="DEPENDENCY_OUTAGE_LIMIT_S"):
        await run([record(1, "o-1")], always_conflicting, outage_limit_s=0.2)


headers_strategy = st.lists(
    st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=30))), max_size=5
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {
        "id": st.text(max_size=10) | st.integers(0, 99),
        "type": st.sampled_from([*REGISTRY, "nope", ""]) | st.text(max_size=10),
        "version": st.integers(min_value=-10, max_value=10) | st.text(max_size=3) | st.none(),
        "source": st.text(max_size=10),
        "time": st.sampled_from(["2026-11-26T00:00:00Z", "yesterday", ""]),
        "subject": st.text(max_size=10),
        "correlation_id": st.text(max_size=10),
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values,
    },
)
values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    envelopes.map(orjson.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.tuples(values, headers_strategy), min_size=1, max_size=8))
def test_no_record_whatever_its_bytes_and_headers_raises_out_of_the_consumer(
    records: list[tuple[bytes | None, list[tuple[str, bytes | None]]]],
) -> None:
    consumed = [raw(i, value, headers) for i, (value, headers) in enumerate(records)]
    applied: list[Delivery] = []

    async def handle(batch: Sequence[Delivery]) -> None:
        applied.extend(batch)

    consumer, producer = asyncio.run(run(consumed, handle))

    applied_offsets = {d.offset for d in applied}
    dead_offsets = {int(dict(h)["dlq_source_offset"] or b"-1") for _, _, h in producer.sent}
    assert applied_offsets | dead_offsets == set(range(len(consumed))), (
        "every record is applied or dead-lettered"
    )
    assert not applied_offsets & dead_offsets
    for (_, _, headers), dead in zip(producer.sent, sorted(dead_offsets), strict=True):
        assert headers[: len(consumed[dead].headers)] == consumed[dead].headers
        assert dict(headers)["dlq_error"]
    assert consumer.commits == 1

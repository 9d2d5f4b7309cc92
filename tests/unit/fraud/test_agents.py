"""Fraud's agents under faust's test_context (see tests.unit.faust_agents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.fraud.agents import BY_CUSTOMER_TOPIC
from services.fraud.main import FraudApp, FraudSettings, build_app
from shared.contracts import (
    Envelope,
    FraudDecision,
    FraudReason,
    FraudScored,
    OrderConfirmed,
    topics,
)
from shared.faust_app import App, OutboundRecord
from shared.kafka import Headers, decode
from tests.unit.faust_agents import Agents, Recorder, counted, under_test
from tests.unit.fraud.factories import envelope_of, placed, record_of
from tests.unit.samples import T0

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_network")]


def published_scores(recorder: Recorder) -> list[tuple[Envelope, FraudScored]]:
    envelopes = [decode(record.value) for record in recorder.published]
    return [(envelope, FraudScored.model_validate(envelope.data)) for envelope in envelopes]


@pytest.fixture
def fraud(recorder: Recorder, tmp_path: Path) -> FraudApp:
    settings = FraudSettings(
        fraud_data_dir=str(tmp_path),
        fraud_review_above_fen=2_000_000,
        fraud_reject_above_fen=5_000_000,
        fraud_velocity_max_orders=5,
        fraud_velocity_window_s=600,
        fraud_blocked_customers="cust-blocked-demo",
    )
    return build_app(settings, outputs=recorder.outputs())


@pytest.fixture
async def agents(fraud: FraudApp, recorder: Recorder) -> AsyncIterator[Agents]:
    async with under_test(fraud.route, fraud.score, recorder) as agents:
        yield agents


def envelope_bytes(**changes: Any) -> bytes:
    """A valid order.placed envelope with some of its fields changed."""
    body = envelope_of(placed()).model_dump(mode="json")
    return orjson.dumps({**body, **changes})


async def test_an_order_is_re_keyed_by_customer_with_its_record_unchanged(
    agents: Agents, recorder: Recorder
) -> None:
    key, value, headers = record_of(envelope_of(placed("cust-7")))

    await agents.route.put(value, key=key, headers=headers)

    assert recorder.forwarded == [OutboundRecord(b"cust-7", value, headers)]


async def test_a_placed_order_is_scored_and_its_fraud_scored_published_keyed_by_order_id(
    agents: Agents, recorder: Recorder, fraud: FraudApp
) -> None:
    event = placed("cust-1", total_fen=10_000)
    cause = envelope_of(event)

    await agents.source(*record_of(cause))

    [(answer, scored)] = published_scores(recorder)
    assert recorder.published[0].key == event.order_id.encode()
    assert dict(recorder.published[0].headers)["ce_type"] == b"fraud.scored"
    assert (scored.order_id, scored.decision) == (event.order_id, FraudDecision.APPROVE)
    assert (answer.causation_id, answer.correlation_id) == (cause.id, cause.correlation_id)
    assert fraud.scores[event.order_id]["envelope"]["id"] == answer.id
    assert recorder.dead_letters == []


async def test_a_redelivered_order_is_answered_with_the_same_event_and_not_counted_twice(
    agents: Agents, recorder: Recorder, fraud: FraudApp
) -> None:
    event = placed("cust-redelivered")
    record = record_of(envelope_of(event))
    applied = counted("fraud", "events_applied_total", "order.placed")
    duplicates = counted("fraud", "events_duplicate_total", "order.placed")

    await agents.source(*record)
    await agents.source(*record)

    [(first, _), (again, _)] = published_scores(recorder)
    assert again.id == first.id and again == first
    assert counted("fraud", "events_applied_total", "order.placed") == applied + 1
    assert counted("fraud", "events_duplicate_total", "order.placed") == duplicates + 1
    assert fraud.history["cust-redelivered"] == {event.order_id: T0.timestamp()}


async def test_the_sixth_order_of_a_customer_within_the_window_is_rejected_for_velocity(
    agents: Agents, recorder: Recorder
) -> None:
    for second in range(6):
        await agents.source(*record_of(envelope_of(placed("cust-busy", at=T0 + timedelta(seconds=second)))))
    await agents.source(*record_of(envelope_of(placed("cust-calm", at=T0 + timedelta(seconds=6)))))

    outcomes = [(scored.decision, scored.reasons) for _, scored in published_scores(recorder)]
    assert outcomes == [(FraudDecision.APPROVE, [])] * 5 + [
        (FraudDecision.REJECT, [FraudReason.VELOCITY]),
        (FraudDecision.APPROVE, []),
    ]


BAD_RECORDS: dict[str, bytes | None] = {
    "garbage": b"\x00\xff not an event",
    "version 0": envelope_bytes(version=0),
    "version -5": envelope_bytes(version=-5),
    "unknown type": envelope_bytes(type="order.teleported"),
    "invalid data": envelope_bytes(data={"order_id": "o-1"}),
    "deeply nested": b"[" * 5000 + b"]" * 5000,
    "no value": None,
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_a_record_that_cannot_be_read_is_dead_lettered_and_the_next_order_still_scored(
    agents: Agents, recorder: Recorder, case: str
) -> None:
    # The null header: Kafka allows one, and it must neither break the agent nor be dropped.
    original: Headers = [("origin", case.encode()), ("empty", None)]
    good = placed("cust-after-poison")

    await agents.source(b"poison-key", BAD_RECORDS[case], original)
    await agents.source(*record_of(envelope_of(good)))

    [letter] = recorder.dead_letters
    headers = dict(letter.headers)
    assert letter.key == b"poison-key" and letter.value == (BAD_RECORDS[case] or b"")
    assert (headers["origin"], headers["empty"]) == (case.encode(), None), "original headers kept"
    assert headers["dlq_error"] and headers["dlq_error"].startswith(b"undecodable record: ")
    assert headers["dlq_consumer"] == b"fraud"
    assert headers["dlq_source_topic"] == topics.ORDER_EVENTS.encode()
    assert headers["dlq_source_offset"] == b"0"
    assert [scored.order_id for _, scored in published_scores(recorder)] == [good.order_id]


async def test_the_dead_letter_says_why_a_version_or_type_was_refused(
    agents: Agents, recorder: Recorder
) -> None:
    await agents.source(b"k", envelope_bytes(version=0), [])
    await agents.source(b"k", envelope_bytes(type="order.teleported"), [])

    errors = [dict(letter.headers)["dlq_error"] or b"" for letter in recorder.dead_letters]
    assert b"versions start at 1" in errors[0]
    assert b"unknown event type" in errors[1]


async def test_an_order_with_a_null_header_is_scored_and_forwarded_with_it(
    agents: Agents, recorder: Recorder
) -> None:
    event = placed("cust-null-header")
    key, value, headers = record_of(envelope_of(event))

    await agents.source(key, value, [*headers, ("trace", None)])

    assert ("trace", None) in recorder.forwarded[0].headers
    assert [scored.order_id for _, scored in published_scores(recorder)] == [event.order_id]
    assert recorder.dead_letters == []


async def test_order_events_fraud_does_not_score_are_passed_over(agents: Agents, recorder: Recorder) -> None:
    confirmed = OrderConfirmed(
        order_id="o-1", order_no="N-1", customer_id="c", lines=[], total_fen=1, payment_id="p"
    )
    event = placed("cust-after-confirmed")

    await agents.source(*record_of(envelope_of(confirmed)))
    await agents.source(*record_of(envelope_of(event)))

    assert [record.key for record in recorder.forwarded] == [b"cust-after-confirmed"]
    assert [scored.order_id for _, scored in published_scores(recorder)] == [event.order_id]
    assert recorder.dead_letters == []


UNSCORABLE: dict[str, tuple[bytes, bytes]] = {
    "an order that cannot be read": (
        envelope_bytes(data={"order_id": "unscorable-1"}),
        b"invalid OrderPlaced",
    ),
    "an event that is not an order": (
        record_of(envelope_of(FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)))[1],
        b"fraud scores order.placed only, not fraud.scored",
    ),
    "bytes that are no event": (b"{not json", b"JSONDecodeError"),
}


@pytest.mark.parametrize("case", sorted(UNSCORABLE))
async def test_a_record_fraud_cannot_score_on_its_own_topic_is_dead_lettered_and_scoring_goes_on(
    agents: Agents, recorder: Recorder, case: str
) -> None:
    value, why = UNSCORABLE[case]
    good = placed("cust-after-unscorable")

    await agents.stateful.put(value, key=b"unscorable-1", headers=[("origin", b"test")])
    await agents.source(*record_of(envelope_of(good)))

    [letter] = recorder.dead_letters
    headers = dict(letter.headers)
    assert (letter.key, letter.value, headers["origin"]) == (b"unscorable-1", value, b"test")
    assert headers["dlq_consumer"] == b"fraud"
    assert headers["dlq_source_topic"] == BY_CUSTOMER_TOPIC.encode()
    error = headers["dlq_error"] or b""
    assert error.startswith(b"cannot score: ") and why in error
    assert [scored.order_id for _, scored in published_scores(recorder)] == [good.order_id]


def test_the_tables_are_in_memory_and_the_agents_read_their_topics(fraud: FraudApp) -> None:
    assert fraud.app.conf.store.scheme == "memory"
    assert fraud.route.channel.get_topic_name() == topics.ORDER_EVENTS
    assert fraud.score.channel.get_topic_name() == BY_CUSTOMER_TOPIC


def test_settings_read_thresholds_and_blocklist_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_BLOCKED_CUSTOMERS", " a, b ,,")
    monkeypatch.setenv("FRAUD_VELOCITY_MAX_ORDERS", "2")
    settings = FraudSettings()
    assert settings.rules().blocked_customers == frozenset({"a", "b"})
    assert settings.rules().velocity_max_orders == 2


def test_the_faust_consumer_waits_the_services_fetch_wait(tmp_path: Path) -> None:
    # faust fixes 1,500 ms; on a broker whose long poll is not woken by new records, that is what
    # an idle hop would cost (shared.faust_app.App applies the setting).
    fraud = build_app(FraudSettings(fraud_data_dir=str(tmp_path), kafka_fetch_max_wait_ms=7))

    assert isinstance(fraud.app, App) and fraud.app.fetch_max_wait_ms == 7

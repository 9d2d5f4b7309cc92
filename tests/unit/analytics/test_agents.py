"""Analytics' agents under faust's test_context (see tests.unit.faust_agents), with their windowed
in-memory tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.analytics.agents import BY_MERCHANT_TOPIC
from services.analytics.main import AnalyticsApp, AnalyticsSettings, build_app
from shared.contracts import FraudDecision, FraudScored, MerchantRevenue, topics
from shared.faust_app import OutboundRecord
from shared.kafka import Headers, decode
from tests.unit.analytics.factories import confirmed, envelope_of, line, record_of
from tests.unit.faust_agents import Agents, Recorder, counted, under_test
from tests.unit.samples import T0

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("no_network")]


def published_revenue(recorder: Recorder) -> list[MerchantRevenue]:
    return [MerchantRevenue.model_validate(decode(record.value).data) for record in recorder.published]


async def confirmed_at(agents: Agents, at: datetime, *lines: Any) -> None:
    await agents.source(*record_of(envelope_of(confirmed(*lines), at=at)))


# The agents' clock: a few seconds after the minutes the tests count in.
NOW = T0 + timedelta(minutes=2)


@pytest.fixture
def analytics(recorder: Recorder, tmp_path: Path) -> AnalyticsApp:
    settings = AnalyticsSettings(analytics_data_dir=str(tmp_path), analytics_retention_s=3600)
    return build_app(settings, outputs=recorder.outputs(), clock=lambda: NOW)


@pytest.fixture
async def agents(analytics: AnalyticsApp, recorder: Recorder) -> AsyncIterator[Agents]:
    async with under_test(analytics.route, analytics.tally, recorder) as agents:
        yield agents


async def test_a_confirmed_order_is_re_keyed_once_per_merchant_with_its_record_unchanged(
    agents: Agents, recorder: Recorder
) -> None:
    key, value, headers = record_of(
        envelope_of(confirmed(line("m-tea", 100), line("m-cups", 5), line("m-tea", 1)), at=T0)
    )

    await agents.route.put(value, key=key, headers=headers)

    assert recorder.forwarded == [
        OutboundRecord(b"m-tea", value, headers),
        OutboundRecord(b"m-cups", value, headers),
    ]


async def test_each_merchants_minute_is_published_keyed_by_merchant_with_its_running_totals(
    agents: Agents, recorder: Recorder, analytics: AnalyticsApp
) -> None:
    await confirmed_at(
        agents, T0 + timedelta(seconds=1), line("m-tea", 1999, quantity=2), line("m-cups", 500)
    )
    await confirmed_at(agents, T0 + timedelta(seconds=30), line("m-tea", 1))
    await confirmed_at(agents, T0 + timedelta(seconds=61), line("m-tea", 7))

    rows = [(r.merchant_id, r.window_start, r.orders, r.revenue_fen) for r in published_revenue(recorder)]
    assert rows == [
        ("m-tea", T0, 1, 3998),
        ("m-cups", T0, 1, 500),
        ("m-tea", T0, 2, 3999),
        ("m-tea", T0 + timedelta(minutes=1), 1, 7),
    ]
    assert [record.key for record in recorder.published] == [b"m-tea", b"m-cups", b"m-tea", b"m-tea"]
    assert dict(recorder.published[0].headers)["ce_type"] == b"analytics.merchant_revenue"
    window = analytics.window.current(T0.timestamp())
    assert analytics.totals[("m-tea", window)] == {"orders": 2, "revenue_fen": 3999, "refunded_fen": 0}
    assert recorder.dead_letters == []


async def test_a_redelivered_order_is_counted_once_and_its_minute_published_again(
    agents: Agents, recorder: Recorder
) -> None:
    record = record_of(envelope_of(confirmed(line("m-redelivered", 100)), at=T0))
    applied = counted("analytics", "events_applied_total", "order.confirmed")
    duplicates = counted("analytics", "events_duplicate_total", "order.confirmed")

    await agents.source(*record)
    await agents.source(*record)

    first, again = published_revenue(recorder)
    assert first == again and (again.orders, again.revenue_fen) == (1, 100)
    assert decode(recorder.published[0].value).id == decode(recorder.published[1].value).id
    assert counted("analytics", "events_applied_total", "order.confirmed") == applied + 1
    assert counted("analytics", "events_duplicate_total", "order.confirmed") == duplicates + 1


async def test_an_order_confirmed_before_the_kept_minutes_is_not_published(
    agents: Agents, recorder: Recorder
) -> None:
    await confirmed_at(agents, NOW - timedelta(hours=3), line("m-late", 100))
    await confirmed_at(agents, NOW, line("m-late", 5))

    assert [(r.window_start, r.orders, r.revenue_fen) for r in published_revenue(recorder)] == [
        (NOW.replace(second=0), 1, 5)
    ]
    assert recorder.dead_letters == []


async def test_order_events_analytics_does_not_count_are_passed_over(
    agents: Agents, recorder: Recorder
) -> None:
    scored = FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)

    await agents.source(*record_of(envelope_of(scored)))
    await confirmed_at(agents, T0, line("m-after", 5))

    assert [record.key for record in recorder.forwarded] == [b"m-after"]
    assert recorder.dead_letters == []


def envelope_bytes(**changes: Any) -> bytes:
    """A valid order.confirmed envelope with some of its fields changed."""
    body = envelope_of(confirmed(line("m-1", 100)), at=T0).model_dump(mode="json")
    return orjson.dumps({**body, **changes})


BAD_RECORDS: dict[str, bytes | None] = {
    "garbage": b"\x00\xff not an event",
    "version 0": envelope_bytes(version=0),
    "unknown type": envelope_bytes(type="order.teleported"),
    "invalid data": envelope_bytes(data={"order_id": "o-1"}),
    "no value": None,
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_a_record_that_cannot_be_read_is_dead_lettered_and_the_next_order_still_counted(
    agents: Agents, recorder: Recorder, case: str
) -> None:
    original: Headers = [("origin", case.encode()), ("empty", None)]

    await agents.source(b"poison-key", BAD_RECORDS[case], original)
    await confirmed_at(agents, T0, line("m-after-poison", 5))

    [letter] = recorder.dead_letters
    headers = dict(letter.headers)
    assert letter.key == b"poison-key" and letter.value == (BAD_RECORDS[case] or b"")
    assert (headers["origin"], headers["empty"]) == (case.encode(), None), "original headers kept"
    assert headers["dlq_error"] and headers["dlq_error"].startswith(b"undecodable record: ")
    assert headers["dlq_consumer"] == b"analytics"
    assert headers["dlq_source_topic"] == topics.ORDER_EVENTS.encode()
    assert [r.merchant_id for r in published_revenue(recorder)] == ["m-after-poison"]


UNCOUNTABLE: dict[str, tuple[bytes | None, bytes, bytes]] = {
    "an order that cannot be read": (
        b"m-1",
        envelope_bytes(data={"order_id": "o-1"}),
        b"invalid OrderConfirmed",
    ),
    "an event that is not a confirmed order": (
        b"m-1",
        record_of(envelope_of(FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)))[1],
        b"analytics counts order.confirmed only, not fraud.scored",
    ),
    "a merchant with no line on the order": (b"m-other", envelope_bytes(), b"no line of merchant 'm-other'"),
    "a record without a key": (None, envelope_bytes(), b"the record has no key"),
    "a key that is not text": (b"\xff\xfe", envelope_bytes(), b"not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(UNCOUNTABLE))
async def test_a_record_analytics_cannot_count_on_its_own_topic_is_dead_lettered_and_counting_goes_on(
    agents: Agents, recorder: Recorder, case: str
) -> None:
    key, value, why = UNCOUNTABLE[case]

    await agents.stateful.put(value, key=key, headers=[("origin", b"test")])
    await confirmed_at(agents, T0, line("m-after-uncountable", 5))

    [letter] = recorder.dead_letters
    headers = dict(letter.headers)
    assert (letter.key, letter.value, headers["origin"]) == (key, value, b"test")
    assert headers["dlq_consumer"] == b"analytics"
    assert headers["dlq_source_topic"] == BY_MERCHANT_TOPIC.encode()
    error = headers["dlq_error"] or b""
    assert error.startswith(b"cannot count: ") and why in error
    assert [r.merchant_id for r in published_revenue(recorder)] == ["m-after-uncountable"]


def test_the_tables_are_one_minute_windows_in_memory_and_the_agents_read_their_topics(
    analytics: AnalyticsApp,
) -> None:
    assert analytics.app.conf.store.scheme == "memory"
    assert analytics.route.channel.get_topic_name() == topics.ORDER_EVENTS
    assert analytics.tally.channel.get_topic_name() == BY_MERCHANT_TOPIC
    assert (analytics.window.size, analytics.window.expires) == (60, 3600)
    for table in (analytics.totals, analytics.counted):
        assert table.window is analytics.window
        assert table.partitions == AnalyticsSettings().topic_partitions


def test_settings_read_port_and_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_PORT", "9105")
    monkeypatch.setenv("ANALYTICS_RETENTION_S", "7200")

    settings = AnalyticsSettings()

    assert settings.analytics_port == 9105
    assert settings.retention == timedelta(hours=2)

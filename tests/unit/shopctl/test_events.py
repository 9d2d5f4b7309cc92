"""`shopctl events` apart from the broker: times, windows, filters, the readable form, export rows and
where a replay may write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from shared.contracts import Envelope
from shared.contracts.topics import ALL, dead_letter
from shopctl.events import (
    DEFAULT_SANDBOX_PREFIX,
    Column,
    Selection,
    Window,
    check_sandbox_prefix,
    export_columns,
    export_row,
    format_time,
    jsonl_line,
    parse_time,
    read,
    render,
    replay_refusal,
    without_personal_data,
)
from tests.unit.shopctl.records import NOW, Record, record_of, rejected

pytestmark = pytest.mark.unit


# --- times and windows -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T09:30:00Z", NOW),
        ("2026-11-26T17:30:00+08:00", NOW),
        ("2026-11-26 17:30+08:00", NOW),
        ("2026-11-26T09:30:00.250000+00:00", NOW + timedelta(milliseconds=250)),
        ("now", NOW),
        (" NOW ", NOW),
        ("now-1h", NOW - timedelta(hours=1)),
        ("now-1d12h", NOW - timedelta(days=1, hours=12)),
        ("now-90s", NOW - timedelta(seconds=90)),
        ("-15m", NOW - timedelta(minutes=15)),
        ("-2w", NOW - timedelta(weeks=2)),
    ],
)
def test_times_are_iso_8601_with_a_zone_now_or_a_time_ago_and_come_back_in_utc(
    text: str, expected: datetime
) -> None:
    moment = parse_time(text, NOW)

    assert moment == expected
    assert moment.utcoffset() == timedelta(0)


def test_now_is_taken_in_utc_whatever_the_clock_zone() -> None:
    shanghai = NOW.astimezone(timezone(timedelta(hours=8)))
    assert parse_time("now-1h", shanghai).tzinfo == UTC


@pytest.mark.parametrize("text", ["2026-11-26T09:30:00", "2026-11-26", "2026-11-26 09:30"])
def test_a_time_without_a_zone_is_refused_with_the_fix(text: str) -> None:
    with pytest.raises(ValueError, match="has no time zone") as refused:
        parse_time(text, NOW)
    assert f"{text}Z" in str(refused.value) and "+08:00" in str(refused.value)


@pytest.mark.parametrize("text", ["yesterday", "", "now-", "now-1y", "now+1h", "1h", "2026-13-01T00:00Z"])
def test_anything_else_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, NOW)


def test_a_window_holds_its_start_but_not_its_end() -> None:
    window = Window(NOW, NOW + timedelta(minutes=1))

    assert NOW in window
    assert NOW + timedelta(seconds=59.999) in window
    assert NOW + timedelta(minutes=1) not in window
    assert NOW - timedelta(microseconds=1) not in window
    assert None not in window
    assert str(window) == "[2026-11-26T09:30:00.000Z, 2026-11-26T09:31:00.000Z)"


@pytest.mark.parametrize("end", [NOW, NOW - timedelta(seconds=1)])
def test_a_window_must_end_after_it_starts(end: datetime) -> None:
    with pytest.raises(ValueError, match="--from .* must be before --to"):
        Window(NOW, end)


def test_times_print_in_utc_to_the_millisecond() -> None:
    assert format_time(datetime(2026, 11, 26, 17, 30, 1, 234567, tzinfo=timezone(timedelta(hours=8)))) == (
        "2026-11-26T09:30:01.234Z"
    )


# --- reading records --------------------------------------------------------------------------------


def test_an_event_record_is_read_with_its_envelope_and_its_own_time() -> None:
    envelope = rejected(at=NOW - timedelta(minutes=5))

    seen = read(record_of(envelope))

    assert seen.envelope == envelope
    assert seen.problem is None and seen.contract_problem is None
    assert seen.moment == NOW - timedelta(minutes=5)


@pytest.mark.parametrize(
    "value", [b"garbage{", None, b"", b"[]", b'{"type": "order.placed"}', b"[" * 5000 + b"]" * 5000]
)
def test_a_record_that_is_not_an_event_is_read_as_such_with_its_record_time(value: bytes | None) -> None:
    seen = read(Record(value=value))

    assert seen.envelope is None
    assert seen.problem
    assert seen.moment == NOW


def test_a_record_without_a_timestamp_and_without_an_event_has_no_time() -> None:
    assert read(Record(value=b"garbage", timestamp=-1)).moment is None


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"type": "order.unheard_of"}, "unknown event type"),
        ({"version": 9}, "newer than this service knows"),
        ({"data": {"order_id": "ord-1"}}, "invalid OrderRejected"),
    ],
)
def test_an_envelope_that_breaks_its_contract_is_still_read_and_says_how(
    change: dict[str, object], complaint: str
) -> None:
    envelope = rejected().model_copy(update=change)

    seen = read(record_of(envelope))

    assert seen.envelope == envelope
    assert seen.contract_problem is not None and complaint in seen.contract_problem


# --- choosing what tail shows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "shown"),
    [
        (Selection(), True),
        (Selection(types=("order.rejected",)), True),
        (Selection(types=("order.placed", "order.rejected")), True),
        (Selection(types=("order.*",)), True),
        (Selection(types=("order.placed",)), False),
        (Selection(types=("payment.*",)), False),
        (Selection(order_id="ord-1"), True),
        (Selection(order_id="ord-2"), False),
        (Selection(types=("order.rejected",), order_id="ord-2"), False),
    ],
)
def test_tail_filters_events_by_type_and_by_order(selection: Selection, shown: bool) -> None:
    assert selection.admits(read(record_of(rejected("ord-1")))) is shown


@pytest.mark.parametrize(
    ("selection", "shown"),
    [
        (Selection(), True),
        (Selection(order_id="ord-1"), True),
        (Selection(order_id="ord-2"), False),
        (Selection(types=("order.rejected",)), False),
    ],
)
def test_a_record_that_is_not_an_event_is_shown_unless_a_filter_rules_it_out(
    selection: Selection, shown: bool
) -> None:
    assert selection.admits(read(Record(value=b"garbage", key=b"ord-1"))) is shown


def test_an_event_reads_as_a_headline_its_envelope_and_its_indented_payload() -> None:
    envelope = rejected(causation_id="cause-1")

    text = render(read(record_of(envelope)))

    headline, attributes, *payload = text.rstrip("\n").splitlines()
    assert headline == f"2026-11-26T09:30:00.000Z  order.rejected v1  {envelope.subject}"
    for part in [
        "source order",
        "correlation corr-7",
        f"id {envelope.id}",
        "cause cause-1",
        "order.events[2]@17",
    ]:
        assert part in attributes
    assert payload[0] == "  {" and payload[1].startswith('    "order_id": ')
    assert orjson.loads("\n".join(payload)) == envelope.data
    assert text.endswith("\n\n"), "a blank line between events"


def test_a_record_that_is_not_an_event_reads_as_such_with_a_preview_of_its_bytes() -> None:
    text = render(read(Record(value=b"x" * 500, key=b"ord-1")))

    assert "NOT AN EVENT  at order.events[2]@17" in text
    assert "JSONDecodeError" in text
    assert "key 5 bytes: b'ord-1'" in text
    assert f"value 500 bytes: b'{'x' * 200}'..." in text


def test_a_dead_letter_says_where_it_came_from_and_why_it_was_refused() -> None:
    headers = (
        ("dlq_error", b"handler failed: boom"),
        ("dlq_consumer", b"inventory"),
        ("dlq_source_topic", b"order.events"),
        ("dlq_source_partition", b"1"),
        ("dlq_source_offset", b"42"),
    )
    text = render(read(record_of(rejected(), topic="order.events.dlq", headers=headers)))

    assert "dead letter from order.events[1]@42, refused by inventory: handler failed: boom" in text
    assert '"order_id": "ord-1"' in text


def test_an_event_that_breaks_its_contract_says_so_and_still_shows_its_payload() -> None:
    text = render(read(record_of(rejected().model_copy(update={"version": 9}))))

    assert "! breaks its contract: " in text and "newer than" in text
    assert '"reason": "OUT_OF_STOCK"' in text


# --- export rows ------------------------------------------------------------------------------------


def test_export_has_a_column_per_envelope_attribute_then_where_the_record_was() -> None:
    columns = {column.name: column for column in export_columns()}

    assert list(columns) == [*Envelope.model_fields, "topic", "partition", "offset"]
    assert columns["time"] == Column("time", "timestamp")
    assert columns["version"] == Column("version", "integer")
    assert columns["causation_id"] == Column("causation_id", "string", nullable=True)
    assert columns["data"] == Column("data", "json")
    assert columns["offset"] == Column("offset", "integer")


def test_an_export_row_holds_the_envelope_the_payload_as_json_text_and_the_records_place() -> None:
    envelope = rejected(at=datetime(2026, 11, 26, 17, 30, tzinfo=timezone(timedelta(hours=8))))

    row = export_row(read(record_of(envelope)), export_columns())

    assert row == {
        "id": envelope.id,
        "type": "order.rejected",
        "version": 1,
        "source": "order",
        "time": NOW,
        "subject": "ord-1",
        "correlation_id": "corr-7",
        "causation_id": None,
        "data": orjson.dumps(envelope.data).decode(),
        "topic": "order.events",
        "partition": 2,
        "offset": 17,
    }
    assert row["time"].tzinfo == UTC


def test_a_json_lines_row_has_the_same_fields_with_the_payload_as_an_object() -> None:
    envelope = rejected(causation_id="cause-1")

    document = orjson.loads(jsonl_line(read(record_of(envelope))))

    assert list(document) == [column.name for column in export_columns()]
    assert document["data"] == envelope.data
    assert document["time"] == "2026-11-26T09:30:00Z"
    assert (document["topic"], document["partition"], document["offset"]) == ("order.events", 2, 17)
    assert jsonl_line(read(record_of(envelope))).endswith(b"}\n")


def test_a_record_that_is_not_an_event_makes_no_row() -> None:
    seen = read(Record(value=b"garbage"))
    with pytest.raises(ValueError, match=r"order.events\[2\]@17 is not an event"):
        export_row(seen, export_columns())
    with pytest.raises(ValueError, match="is not an event"):
        jsonl_line(seen)


# --- where replay may write ----------------------------------------------------------------------


@pytest.mark.parametrize("topic", [name for topic in ALL for name in (topic, dead_letter(topic))])
def test_replay_never_writes_into_a_topic_the_services_consume_or_own(topic: str) -> None:
    refusal = replay_refusal(topic, source="order.events", sandbox_prefix=DEFAULT_SANDBOX_PREFIX)
    assert refusal == f"{topic} is a platform topic that the services consume or own"


@pytest.mark.parametrize(
    "topic",
    [
        "__consumer_offsets",
        "fraud-scores-changelog",
        "fraud-velocity-changelog",
        "analytics-revenue-repartition",
        "fraud-__assignor-__leader",
        "sandbox.x-changelog",
    ],
)
def test_replay_never_writes_into_kafkas_or_fausts_internal_topics(topic: str) -> None:
    refusal = replay_refusal(topic, source="order.events", sandbox_prefix=DEFAULT_SANDBOX_PREFIX)
    assert refusal is not None and "internal topic" in refusal


@pytest.mark.parametrize(
    ("topic", "complaint"),
    [
        ("orders-copy", "is not a sandbox topic: replay writes only into topics named sandbox.<something>"),
        ("fraud-orders-by-customer", "is not a sandbox topic"),
        ("analytics.anything", "is not a sandbox topic"),
        ("sandbox.", "is not a sandbox topic"),
        ("Sandbox.x", "is not a sandbox topic"),
        ("sandbox.has space", "is not a topic name"),
        ("sandbox." + "x" * 250, "is not a topic name"),
        ("..", "is not a topic name"),
    ],
)
def test_replay_writes_only_into_sandbox_topics(topic: str, complaint: str) -> None:
    refusal = replay_refusal(topic, source="order.events", sandbox_prefix=DEFAULT_SANDBOX_PREFIX)
    assert refusal is not None and complaint in refusal


@pytest.mark.parametrize("topic", ["sandbox.revenue-test", "sandbox.a1b2c3", "sandbox.team_x.job.1"])
def test_sandbox_topics_are_allowed(topic: str) -> None:
    assert replay_refusal(topic, source="order.events", sandbox_prefix=DEFAULT_SANDBOX_PREFIX) is None


def test_replay_does_not_write_into_the_topic_it_reads() -> None:
    refusal = replay_refusal("sandbox.a", source="sandbox.a", sandbox_prefix=DEFAULT_SANDBOX_PREFIX)
    assert refusal == "sandbox.a is the topic being replayed"


def test_the_sandbox_prefix_can_be_changed() -> None:
    assert replay_refusal("lab-team1.job", source="order.events", sandbox_prefix="lab-team1.") is None
    assert replay_refusal("sandbox.job", source="order.events", sandbox_prefix="lab-team1.") is not None


@pytest.mark.parametrize(
    ("prefix", "complaint"),
    [
        ("", "must be 1 or more"),
        ("has space.", "must be 1 or more"),
        ("order.", "would cover platform topics (order.events, order.events.dlq)"),
        ("o", "would cover platform topics"),
        ("payment.events", "would cover platform topics (payment.events, payment.events.dlq)"),
    ],
)
def test_a_sandbox_prefix_that_would_admit_platform_topics_is_refused(prefix: str, complaint: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_sandbox_prefix(prefix)
    assert complaint in str(refused.value)


def test_the_default_sandbox_prefix_is_usable() -> None:
    check_sandbox_prefix(DEFAULT_SANDBOX_PREFIX)


def test_an_envelope_time_without_a_zone_is_taken_as_utc_everywhere() -> None:
    naive = rejected().model_copy(update={"time": datetime(2026, 11, 26, 9, 30)})  # noqa: DTZ001
    seen = read(record_of(naive))

    assert seen.moment == NOW
    assert seen.moment in Window(NOW, NOW + timedelta(seconds=1))
    assert render(seen).startswith("2026-11-26T09:30:00.000Z  order.rejected")
    assert export_row(seen, export_columns())["time"] == NOW
    assert orjson.loads(jsonl_line(seen))["time"] == "2026-11-26T09:30:00Z"


def test_analysts_get_an_orders_region_but_not_who_receives_it_nor_the_payment_token() -> None:
    placed = rejected().model_copy(
        update={
            "type": "order.placed",
            "data": {
                "order_id": "ord-1",
                "total_fen": 1999,
                "shipping_address": {
                    "name": "Li Lei",
                    "phone": "+86 138 0000 0000",
                    "province": "Zhejiang",
                    "city": "Hangzhou",
                    "district": "Xihu",
                    "line1": "1 Longjing Road",
                    "postal_code": "310000",
                },
            },
        }
    )
    requested = rejected().model_copy(
        update={"type": "order.payment_requested", "data": {"order_id": "ord-1", "token": "tok_secret"}}
    )

    cut_placed = without_personal_data(read(record_of(placed)))
    cut_requested = without_personal_data(read(record_of(requested)))

    assert cut_placed.envelope is not None and cut_requested.envelope is not None
    assert cut_placed.envelope.data == {
        "order_id": "ord-1",
        "total_fen": 1999,
        "shipping_address": {"province": "Zhejiang", "city": "Hangzhou", "district": "Xihu"},
    }
    assert cut_requested.envelope.data == {"order_id": "ord-1"}
    assert cut_placed.envelope.model_copy(update={"data": placed.data}) == placed, "only the payload changes"
    for text in ["Li Lei", "138", "Longjing", "310000"]:
        assert text not in render(cut_placed) and text.encode() not in jsonl_line(cut_placed)
    assert "tok_secret" not in render(cut_requested)


def test_cutting_personal_data_leaves_other_events_and_non_events_alone() -> None:
    event = read(record_of(rejected()))
    garbage = read(Record(value=b"garbage"))

    assert without_personal_data(event) == event
    assert without_personal_data(garbage) is garbage

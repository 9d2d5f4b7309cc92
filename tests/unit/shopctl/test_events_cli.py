"""`shopctl events` on the command line: arguments, refusals, exit statuses and messages. The broker
side is replaced by fakes here; tests/integration/test_events_cli.py runs it against a real one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from shopctl import streams
from shopctl.cli import main
from shopctl.events import Selection, Window

pytestmark = pytest.mark.unit

WINDOW = ["--from", "2026-11-26T09:00:00+08:00", "--to", "2026-11-26T10:00:00+08:00"]
STARTED = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("EVENTS_SANDBOX_PREFIX", raising=False)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Fakes for the broker side that record how they were called; none may be reached by accident."""
    made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def tail(*args: Any, emit: Callable[[str], None], **kwargs: Any) -> int:
        made.append(("tail", args, kwargs))
        emit("an event\n\n")
        return 1

    async def replay(*args: Any) -> streams.ReplayReport:
        made.append(("replay", args, {}))
        return streams.ReplayReport(copied=7, created=True, partitions=3)

    async def export(*args: Any, **kwargs: Any) -> streams.ExportReport:
        made.append(("export", args, kwargs))
        return streams.ExportReport(rows=12, skipped=("order.events[1]@4",))

    monkeypatch.setattr(streams, "tail", tail)
    monkeypatch.setattr(streams, "replay", replay)
    monkeypatch.setattr(streams, "export", export)
    return made


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# --- tail -------------------------------------------------------------------------------------------


def test_tail_reads_the_broker_from_the_environment_and_passes_its_filters(
    capsys: pytest.CaptureFixture[str], calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")

    status, out, _ = run(
        capsys, "events", "tail", "order.events", "--type", "order.placed", "--type", "order.c*",
        "--order", "ord-1", "--from-beginning", "--max", "5", "--idle-exit", "2.5",
    )  # fmt: skip

    assert (status, out) == (0, "an event\n\n")
    [(name, args, kwargs)] = calls
    assert name == "tail"
    assert args == (
        "kafka-1:9092,kafka-2:9092",
        "order.events",
        Selection(("order.placed", "order.c*"), "ord-1"),
    )
    assert kwargs == {"from_beginning": True, "max_events": 5, "idle_exit_s": 2.5, "personal_data": False}


def test_tail_starts_at_the_end_and_runs_until_stopped_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    status, _, _ = run(capsys, "events", "tail", "payment.events", "--bootstrap", "127.0.0.1:19092")

    [(_, args, kwargs)] = calls
    assert status == 0
    assert args == ("127.0.0.1:19092", "payment.events", Selection())
    assert kwargs == {
        "from_beginning": False,
        "max_events": None,
        "idle_exit_s": None,
        "personal_data": False,
    }


def test_the_default_broker_is_the_services_default(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    run(capsys, "events", "tail", "order.events")

    assert calls[0][1][0] == "127.0.0.1:9092"


def test_stopping_a_tail_with_ctrl_c_is_a_clean_exit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(streams, "tail", interrupted)

    assert run(capsys, "events", "tail", "order.events") == (0, "", "")


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            streams.ToolError("there is no topic 'nope' on the broker (its topics: order.events)"),
            "shopctl events tail: there is no topic 'nope' on the broker (its topics: order.events)\n",
        ),
        (
            KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
            "shopctl events tail: the Kafka broker at 127.0.0.1:1: KafkaConnectionError: "
            "Unable to bootstrap from [('127.0.0.1', 1)]\n",
        ),
    ],
)
def test_a_missing_topic_or_an_unreachable_broker_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, failure: Exception, message: str
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> int:
        raise failure

    monkeypatch.setattr(streams, "tail", failing)

    assert run(capsys, "events", "tail", "nope", "--bootstrap", "127.0.0.1:1") == (1, "", message)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["bad topic"], "is not a topic name"),
        (["order.events", "--max", "0"], "give 1 or more"),
        (["order.events", "--max", "lots"], "is not a whole number"),
        (["order.events", "--idle-exit", "0"], "give more than 0"),
        (["order.events", "--idle-exit", "soon"], "is not a number of seconds"),
        ([], "the following arguments are required: TOPIC"),
    ],
)
def test_bad_tail_arguments_say_what_is_wrong(
    capsys: pytest.CaptureFixture[str], calls: list[Any], argv: list[str], complaint: str
) -> None:
    status, out, err = run(capsys, "events", "tail", *argv)

    assert (status, out, calls) == (2, "", [])
    assert complaint in err


# --- times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [["replay", "--into", "sandbox.x"], ["export", "out.jsonl"]])
def test_a_time_without_a_zone_is_refused_before_anything_is_read(
    capsys: pytest.CaptureFixture[str], calls: list[Any], action: list[str]
) -> None:
    status, _, err = run(capsys, "events", *action, "--from", "2026-11-26T09:00", "--to", "now")

    assert (status, calls) == (2, [])
    assert "argument --from: '2026-11-26T09:00' has no time zone: add one, as in 2026-11-26T09:00Z" in err


def test_a_window_that_ends_before_it_starts_is_refused(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    status, _, err = run(capsys, "events", "export", "out.jsonl", "--from", "now", "--to", "now-1h")

    assert (status, calls) == (2, [])
    assert "--from" in err and "must be before --to" in err


def test_relative_times_count_back_from_now(capsys: pytest.CaptureFixture[str], calls: list[Any]) -> None:
    before = datetime.now(UTC)
    run(capsys, "events", "export", "out.jsonl", "--from", "now-1h", "--to", "now")
    after = datetime.now(UTC)

    window: Window = calls[0][1][2]
    assert before - timedelta(hours=1) <= window.start <= after - timedelta(hours=1)
    assert before <= window.end <= after


# --- replay -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("order.events", "order.events is a platform topic that the services consume or own"),
        ("payment.events.dlq", "payment.events.dlq is a platform topic that the services consume or own"),
        ("fraud-scores-changelog", "is an internal topic of Kafka or of a faust service"),
        (
            "my-copy",
            "my-copy is not a sandbox topic: replay writes only into topics named sandbox.<something>",
        ),
    ],
)
def test_replay_refuses_topics_outside_the_sandbox_with_status_2_and_reads_nothing(
    capsys: pytest.CaptureFixture[str], calls: list[Any], target: str, reason: str
) -> None:
    status, out, err = run(capsys, "events", "replay", *WINDOW, "--into", target)

    assert (status, out, calls) == (2, "", [])
    assert err.startswith(f"shopctl events replay refuses to write into {target}: ")
    assert reason in err


def test_replay_copies_a_window_into_a_sandbox_topic_and_says_how_many(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    status, out, _ = run(
        capsys, "events", "replay", *WINDOW, "--topic", "payment.events", "--into", "sandbox.job-1",
        "--bootstrap", "127.0.0.1:19092",
    )  # fmt: skip

    assert status == 0
    [(name, args, _)] = calls
    window = Window(STARTED, STARTED + timedelta(hours=1))
    assert (name, args) == ("replay", ("127.0.0.1:19092", "payment.events", window, "sandbox.job-1"))
    assert out == (
        "copied 7 records of payment.events from [2026-11-26T01:00:00.000Z, 2026-11-26T02:00:00.000Z) "
        "into sandbox.job-1 (new topic, 3 partitions)\n"
    )


def test_replay_reads_order_events_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    run(capsys, "events", "replay", *WINDOW, "--into", "sandbox.job-1")

    assert calls[0][1][1] == "order.events"


def test_the_sandbox_prefix_comes_from_the_environment_or_the_command_line(
    capsys: pytest.CaptureFixture[str], calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTS_SANDBOX_PREFIX", "lab.")

    assert run(capsys, "events", "replay", *WINDOW, "--into", "sandbox.job")[0] == 2
    assert run(capsys, "events", "replay", *WINDOW, "--into", "lab.job")[0] == 0
    status, _, _ = run(capsys, "events", "replay", *WINDOW, "--into", "team.job", "--sandbox-prefix", "team.")
    assert status == 0
    assert [args[3] for _, args, _ in calls] == ["lab.job", "team.job"]


def test_a_sandbox_prefix_that_covers_platform_topics_is_refused(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    status, _, err = run(
        capsys, "events", "replay", *WINDOW, "--into", "order.events", "--sandbox-prefix", "order."
    )

    assert (status, calls) == (2, [])
    assert "the sandbox prefix 'order.' would cover platform topics" in err


# --- export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fmt"),
    [
        (["orders.parquet"], "parquet"),
        (["orders.PQ"], "parquet"),
        (["orders.jsonl"], "jsonl"),
        (["orders.ndjson"], "jsonl"),
        (["orders.data", "--format", "parquet"], "parquet"),
        (["orders.parquet", "--format", "jsonl"], "jsonl"),
        (["-", "--format", "jsonl"], "jsonl"),
        (["-"], "jsonl"),
    ],
)
def test_export_takes_its_format_from_the_option_or_the_file_name(
    capsys: pytest.CaptureFixture[str], calls: list[Any], argv: list[str], fmt: str
) -> None:
    status, _, _ = run(capsys, "events", "export", *WINDOW, *argv)

    assert status == 0
    assert calls[0][1][3:] == (fmt, argv[0])


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["orders.csv"], "give --format parquet or --format jsonl: 'orders.csv' does not say which"),
        (["-", "--format", "parquet"], "only jsonl can go to stdout (-): give parquet a file name"),
        (["x.parquet", "--format", "csv"], "invalid choice: 'csv'"),
    ],
)
def test_export_refuses_a_format_it_cannot_tell_or_write(
    capsys: pytest.CaptureFixture[str], calls: list[Any], argv: Sequence[str], complaint: str
) -> None:
    status, _, err = run(capsys, "events", "export", *WINDOW, *argv)

    assert (status, calls) == (2, [])
    assert complaint in err


def test_export_reads_the_topics_asked_for_and_reports_what_it_left_out(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    status, out, err = run(
        capsys, "events", "export", *WINDOW, "--topic", "order.events", "--topic", "payment.events",
        "orders.parquet",
    )  # fmt: skip

    assert (status, out) == (0, "")
    assert calls[0][1][1] == ["order.events", "payment.events"]
    assert "wrote 12 events of order.events, payment.events from [2026-11-26T01:00:00.000Z" in err
    assert "left out 1 records that are not events: order.events[1]@4" in err


def test_export_reads_order_events_unless_told_otherwise(
    capsys: pytest.CaptureFixture[str], calls: list[Any]
) -> None:
    run(capsys, "events", "export", *WINDOW, "orders.parquet")

    assert calls[0][1][1] == ["order.events"]


@pytest.mark.parametrize("action", [["tail", "order.events"], ["export", *WINDOW, "orders.parquet"]])
def test_personal_data_is_cut_unless_asked_for(
    capsys: pytest.CaptureFixture[str], calls: list[Any], action: list[str]
) -> None:
    run(capsys, "events", *action)
    run(capsys, "events", *action, "--personal-data")

    assert [kwargs["personal_data"] for _, _, kwargs in calls] == [False, True]


# --- help -------------------------------------------------------------------------------------------


def test_events_without_an_action_prints_its_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "events")

    assert (status, out) == (2, "")
    for action in ["tail", "replay", "export"]:
        assert action in err


@pytest.mark.parametrize(
    ("action", "options"),
    [
        (
            "tail",
            ["--type", "--order", "--from-beginning", "--max", "--idle-exit", "--bootstrap", "examples:"],
        ),
        ("replay", ["--from", "--to", "--topic", "--into", "--sandbox-prefix", "--bootstrap", "examples:"]),
        ("export", ["--from", "--to", "--topic", "--format", "OUT", "--bootstrap", "examples:"]),
    ],
)
def test_each_action_documents_its_options_with_examples(
    capsys: pytest.CaptureFixture[str], action: str, options: list[str]
) -> None:
    status, out, _ = run(capsys, "events", action, "--help")

    assert status == 0
    for option in options:
        assert option in out

"""`shopctl events export`'s files: what a notebook reads back, and no half-written file on failure."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopctl.events import export_columns, read
from shopctl.streams import ToolError, open_sink
from tests.unit.shopctl.records import NOW, Record, record_of, rejected

pytestmark = pytest.mark.unit


def events(count: int) -> list[Record]:
    return [
        record_of(rejected(f"ord-{n}", at=NOW + timedelta(seconds=n)), offset=n, partition=n % 3)
        for n in range(count)
    ]


def test_parquet_reads_back_with_typed_columns_and_one_row_per_event(tmp_path: Path) -> None:
    out = tmp_path / "orders.parquet"
    records = events(3)

    with open_sink("parquet", str(out)) as sink:
        for record in records:
            sink.add(read(record))

    table = pq.read_table(out)
    assert table.num_rows == 3
    assert table.column_names == [column.name for column in export_columns()]
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("version").type == pa.int64()
    assert table.schema.field("data").type == pa.string()
    rows = table.to_pylist()
    assert [row["subject"] for row in rows] == ["ord-0", "ord-1", "ord-2"]
    assert [row["partition"] for row in rows] == [0, 1, 2]
    assert rows[1]["time"] == NOW + timedelta(seconds=1)
    assert orjson.loads(rows[2]["data"])["order_id"] == "ord-2"
    assert rows[0]["causation_id"] is None


def test_an_empty_window_still_makes_a_parquet_file_with_every_column(tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"

    with open_sink("parquet", str(out)):
        pass

    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.column_names == [column.name for column in export_columns()]


def test_json_lines_hold_one_event_per_line(tmp_path: Path) -> None:
    out = tmp_path / "orders.jsonl"

    with open_sink("jsonl", str(out)) as sink:
        for record in events(4):
            sink.add(read(record))

    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line)["subject"] for line in lines] == ["ord-0", "ord-1", "ord-2", "ord-3"]
    first = orjson.loads(lines[0])
    assert datetime.fromisoformat(first["time"]) == NOW.astimezone(UTC)
    assert first["data"]["reason"] == "OUT_OF_STOCK"


def test_json_lines_can_go_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with open_sink("jsonl", "-") as sink:
        sink.add(read(events(1)[0]))

    out = capsysbinary.readouterr().out
    assert orjson.loads(out)["subject"] == "ord-0"


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_failed_export_leaves_no_file_and_keeps_an_older_one(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"orders.{fmt}"
    out.write_bytes(b"yesterday's export")

    with pytest.raises(RuntimeError, match="broker went away"), open_sink(fmt, str(out)) as sink:  # type: ignore[arg-type]
        sink.add(read(events(1)[0]))
        raise RuntimeError("broker went away")

    assert out.read_bytes() == b"yesterday's export"
    assert [path.name for path in tmp_path.iterdir()] == [out.name], "no partial file left behind"


def test_a_finished_export_replaces_an_older_file_and_only_its_owner_may_read_it(tmp_path: Path) -> None:
    out = tmp_path / "orders.jsonl"
    out.write_bytes(b"yesterday's export\n")

    with open_sink("jsonl", str(out)) as sink:
        sink.add(read(events(1)[0]))

    assert orjson.loads(out.read_bytes())["subject"] == "ord-0"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "exports hold personal data"
    assert [path.name for path in tmp_path.iterdir()] == [out.name]


def test_a_file_in_a_missing_directory_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    with (
        pytest.raises(ToolError, match="there is no directory"),
        open_sink("jsonl", str(tmp_path / "no" / "x")),
    ):
        pytest.fail("the sink must not open")


def test_a_directory_is_not_a_file_to_write(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="it is a directory"), open_sink("parquet", str(tmp_path)):
        pytest.fail("the sink must not open")

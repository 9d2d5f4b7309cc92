"""Issue 12 as an analyst would try `shopctl events` on a running platform: tail one order's events,
export a time window for a notebook, replay it into a sandbox topic, and be refused a platform topic."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from shared.contracts import Envelope
from shared.kafka import decode
from shopctl.events import as_utc
from tests.integration.conftest import ADDRESS, Platform
from tests.integration.harness import eventually

FINAL_TYPES = {"order.confirmed", "order.rejected", "order.cancelled"}


async def shopctl(*args: str, timeout_s: float = 90.0) -> tuple[int, str, str]:
    """Runs `.venv/bin/shopctl` as an analyst would; its exit status, stdout and stderr."""
    script = Path(sys.executable).parent / "shopctl"
    process = await asyncio.create_subprocess_exec(
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "ENVIRONMENT": "test"},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    return process.returncode or 0, out.decode(), err.decode()


async def finished_orders(platform: Platform, count: int) -> list[str]:
    """`count` orders placed and settled, each with its final event already on order.events."""
    sku = await platform.product(available=count + 5)
    order_ids = [(await platform.place([(sku, 1)]))["order_id"] for _ in range(count)]
    for order_id in order_ids:
        await platform.settled(order_id)
        await eventually(
            partial(platform.events, "order.events", order_id),
            lambda events: bool(events) and events[-1].type in FINAL_TYPES,
            what=f"order {order_id}'s final event on order.events",
        )
    return order_ids


def record_moment(record: Any) -> datetime:
    """When replay and export place a record: its envelope time, or its Kafka timestamp if it is no event."""
    try:
        return as_utc(decode(record.value).time)
    except ValueError:
        return datetime.fromtimestamp(record.timestamp / 1000, UTC)


async def events_between(platform: Platform, start: datetime, end: datetime) -> list[Envelope]:
    return [e for e in await platform.events("order.events") if start <= as_utc(e.time) < end]


async def test_tail_from_the_beginning_shows_one_orders_events_in_order(platform: Platform) -> None:
    mine, other = await finished_orders(platform, 2)
    expected = await platform.events("order.events", mine)

    status, out, err = await shopctl(
        "events", "tail", "order.events", "--from-beginning", "--order", mine, "--idle-exit", "3",
        "--bootstrap", platform.bootstrap,
    )  # fmt: skip

    assert status == 0, err
    headlines = [line.split("  ") for line in out.splitlines() if line and not line.startswith(" ")]
    assert [(kind, subject) for _, kind, subject in headlines] == [
        (f"{envelope.type} v{envelope.version}", mine) for envelope in expected
    ]
    for envelope in expected:
        assert f"id {envelope.id}" in out and f"correlation {envelope.correlation_id}" in out
    assert f'"order_id": "{mine}"' in out, "the payload as indented JSON"
    assert other not in out


async def test_tail_filters_by_type_and_stops_after_max_events(platform: Platform) -> None:
    [order_id] = await finished_orders(platform, 1)

    status, out, err = await shopctl(
        "events", "tail", "order.events", "--from-beginning", "--order", order_id, "--type", "order.placed",
        "--max", "1", "--bootstrap", platform.bootstrap,
    )  # fmt: skip

    assert status == 0, err
    headlines = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert len(headlines) == 1 and f"order.placed v1  {order_id}" in headlines[0]


async def test_export_writes_a_parquet_file_pyarrow_reads_back_with_the_windows_events(
    platform: Platform, tmp_path: Path
) -> None:
    start = datetime.now(UTC)
    order_ids = await finished_orders(platform, 3)
    end = datetime.now(UTC)

    async def export() -> tuple[list[dict[str, Any]], list[Envelope]]:
        out = tmp_path / f"orders-{uuid.uuid4().hex[:8]}.parquet"
        status, _, err = await shopctl(
            "events", "export", "--from", start.isoformat(), "--to", end.isoformat(), "--format", "parquet",
            str(out), "--bootstrap", platform.bootstrap,
        )  # fmt: skip
        assert status == 0, err
        return pq.read_table(out).to_pylist(), await events_between(platform, start, end)

    # Both reads end where the topic ended when they began; an event of the window still on its way
    # from an outbox when one of them began would make them differ, so they are compared until equal.
    rows, expected = await eventually(
        export,
        lambda result: sorted(row["id"] for row in result[0]) == sorted(e.id for e in result[1]),
        what="the exported events to be the window's events on order.events",
    )
    assert len(rows) == len(expected)
    by_id = {row["id"]: row for row in rows}
    for envelope in expected:
        row = by_id[envelope.id]
        assert (row["type"], row["version"], row["subject"]) == (
            envelope.type,
            envelope.version,
            envelope.subject,
        )
        assert (row["source"], row["correlation_id"]) == (envelope.source, envelope.correlation_id)
        assert row["causation_id"] == envelope.causation_id
        assert row["time"] == as_utc(envelope.time)
        assert row["topic"] == "order.events" and row["offset"] >= 0 and row["partition"] >= 0
    for order_id in order_ids:
        mine = [row for row in sorted(rows, key=lambda r: r["offset"]) if row["subject"] == order_id]
        assert mine[0]["type"] == "order.placed" and mine[-1]["type"] in FINAL_TYPES
        for row, envelope in zip(mine, await platform.events("order.events", order_id), strict=True):
            assert orjson.loads(row["data"]) == analysts_view(envelope.data)


def analysts_view(data: dict[str, Any]) -> dict[str, Any]:
    """A payload as analysts get it: the shipping address cut to its region, no payment token."""
    view = {key: value for key, value in data.items() if key not in ("token", "sealed_token")}
    if "shipping_address" in view:
        address = view["shipping_address"]
        view["shipping_address"] = {key: address[key] for key in ("province", "city", "district")}
    return view


async def test_export_writes_json_lines_too(platform: Platform, tmp_path: Path) -> None:
    start = datetime.now(UTC)
    [order_id] = await finished_orders(platform, 1)
    end = datetime.now(UTC)
    out = tmp_path / "orders.jsonl"

    async def exported(*options: str) -> list[dict[str, Any]]:
        status, _, err = await shopctl(
            "events", "export", "--from", start.isoformat(), "--to", end.isoformat(), str(out),
            "--bootstrap", platform.bootstrap, *options,
        )  # fmt: skip
        assert status == 0, err
        documents = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        return [document for document in documents if document["subject"] == order_id]

    expected = await platform.events("order.events", order_id)
    mine = await exported()
    assert [document["id"] for document in mine] == [envelope.id for envelope in expected]
    assert [document["data"] for document in mine] == [analysts_view(envelope.data) for envelope in expected]
    assert ADDRESS["phone"] not in out.read_text(), "no personal data unless asked for"

    everything = await exported("--personal-data")
    assert [document["data"] for document in everything] == [envelope.data for envelope in expected]
    assert ADDRESS["phone"] in out.read_text()


@pytest.mark.parametrize("target", ["order.events", "payment.events.dlq", "fraud-scores-changelog"])
async def test_replay_into_a_topic_the_services_consume_is_refused(platform: Platform, target: str) -> None:
    status, out, err = await shopctl(
        "events", "replay", "--from", "now-1h", "--to", "now", "--into", target,
        "--bootstrap", platform.bootstrap,
    )  # fmt: skip

    assert (status, out) == (2, "")
    assert f"refuses to write into {target}" in err


async def test_replay_copies_exactly_the_windows_records_into_a_sandbox_topic(platform: Platform) -> None:
    start = datetime.now(UTC)
    order_ids = await finished_orders(platform, 2)
    end = datetime.now(UTC)

    async def replay() -> tuple[list[Any], list[Any], str]:
        sandbox = f"sandbox.{uuid.uuid4()}"
        status, out, err = await shopctl(
            "events", "replay", "--from", start.isoformat(), "--to", end.isoformat(), "--into", sandbox,
            "--bootstrap", platform.bootstrap,
        )  # fmt: skip
        assert status == 0, err
        source = [r for r in await platform.raw_records("order.events") if start <= record_moment(r) < end]
        return await platform.raw_records(sandbox), source, out

    def fingerprint(records: list[Any]) -> Counter[tuple[Any, ...]]:
        return Counter((r.key, r.value, tuple(r.headers), r.timestamp) for r in records)

    # As with export: compared until no event of the window is still on its way from an outbox.
    copied, source, out = await eventually(
        replay,
        lambda result: fingerprint(result[0]) == fingerprint(result[1]),
        what="the sandbox topic to hold exactly the window's records of order.events",
    )
    assert f"copied {len(source)} records of order.events" in out
    for order_id in order_ids:
        in_source = [r.value for r in source if r.key == order_id.encode()]
        in_copy = [r.value for r in sorted(copied, key=lambda r: r.offset) if r.key == order_id.encode()]
        assert in_copy == in_source and in_copy, "one order's records keep their order"
        assert len({r.partition for r in copied if r.key == order_id.encode()}) == 1

"""The run as readable tables, and as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from bench.checks import Check
from bench.results import MessagingCeiling, RunResult, StepResult
from bench.stats import Latency


def to_json(result: RunResult) -> bytes:
    return orjson.dumps(dataclasses.asdict(result), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def write_json(result: RunResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_json(result) + b"\n")


def render(result: RunResult) -> str:
    sections = [
        f"Benchmark ({result.mode}, {result.stack} stack, {result.cpus} CPUs, {result.started_at}, "
        f"{result.duration_s:.0f} s)",
        _ceilings(result),
        _saga(result),
        _processes(result.saga.steps),
        _correctness(result),
        _ratios(result),
    ]
    if result.failures:
        sections.append(
            "Sections without numbers:\n" + "\n".join(f"  ✗ {failure}" for failure in result.failures)
        )
    return "\n\n".join(section for section in sections if section)


def _ceilings(result: RunResult) -> str:
    lines = ["Ceilings (this machine, this run)"]
    for ceiling in (result.ceilings.broker, result.ceilings.relay):
        if ceiling is not None:
            lines.append(_messaging(ceiling))
    rates = result.ceilings.datastore
    if rates:
        counts = sorted({rate.clients for rate in rates})
        rows = []
        for operation in dict.fromkeys(rate.operation for rate in rates):
            cells = []
            for count in counts:
                found = next((r for r in rates if r.operation == operation and r.clients == count), None)
                if found is None:
                    cells.append("-")
                    continue
                per_s = f"{found.docs_per_s:,.0f} docs/s" if found.docs_per_s != found.ops_per_s else ""
                errors = f" ({found.errors} errors)" if found.errors else ""
                cells.append(f"{found.ops_per_s:,.0f}/s {per_s}".strip() + errors)
            rows.append([operation, *cells])
        lines.append("  datastore (fresh server, write concern majority)")
        lines.append(
            _table(["write", *(f"{c} client{'s' if c > 1 else ''}" for c in counts)], rows, indent=4)
        )
        lines += [
            f"    first error of {rate.operation} × {rate.clients}: {rate.first_error[:160]}"
            for rate in rates
            if rate.first_error
        ]
    return "\n".join(lines)


def _messaging(ceiling: MessagingCeiling) -> str:
    return (
        f"  {ceiling.path}: {ceiling.msgs_per_s:,.0f} msgs/s at full blast ({ceiling.blast_messages:,} × "
        f"{ceiling.payload_bytes} B); at {ceiling.probe_rate:g}/s: {_ms(ceiling.latency, 'p50')} / "
        f"{_ms(ceiling.latency, 'p99')} ms p50 / p99"
    )


def _saga(result: RunResult) -> str:
    steps = result.saga.steps
    if not steps and not result.saga.sku:
        return ""
    header = [
        "offered/s",
        "sent",
        "confirmed/s",
        "POST p50/p99 ms",
        "placed→confirmed p50/p99/max ms",
        "429",
        "503",
        "no answer",
        "CPU ms/order",
        "bench CPU ms/order",
        "drain s",
    ]
    rows = [
        [
            f"{step.offered_per_s:g}",
            str(step.sent),
            _num(step.confirmed_per_s, ".1f"),
            f"{_ms(step.post, 'p50')} / {_ms(step.post, 'p99')}",
            " / ".join(_ms(step.placed_to_confirmed, q) for q in ("p50", "p99", "max")),
            str(step.answers.get("429", 0)),
            str(step.answers.get("503", 0)),
            str(step.answers.get("0", 0)),
            _num(step.cpu_ms_per_order, ".1f", missing="not measured"),
            _num(step.bench_cpu_ms_per_order, ".1f"),
            _num(step.settled_after_answers_s, ".1f"),
        ]
        for step in steps
    ]
    lines = [
        f"Saga under open-loop load (product {result.saga.sku}; stopped: {result.saga.stopped_because})",
        "  CPU: every process of the stack (broker, MongoDB servers, services), step start to all settled;",
        "  bench CPU: this process (load generator, event tap, samplers), not in the stack's figure",
    ]
    lines.append(_table(header, rows, indent=2))
    outcomes = [
        [
            f"{step.offered_per_s:g}",
            str(step.accepted),
            str(step.confirmed),
            str(step.rejected),
            str(step.cancelled),
            str(step.still_open),
            _num(step.generator_late_p99_ms, ".1f"),
            " ".join(f"{group}={lag}" for group, lag in step.max_lag.items()),
            step.saturated or "",
        ]
        for step in steps
    ]
    header = [
        "offered/s",
        "accepted",
        "confirmed",
        "rejected",
        "cancelled",
        "open",
        "generator late p99 ms",
        "max consumer lag",
        "saturated",
    ]
    lines.append(_table(header, outcomes, indent=2))
    return "\n".join(lines)


def _processes(steps: Sequence[StepResult]) -> str:
    measured = [step for step in steps if step.cpu_ms_per_order_by_process]
    if not measured:
        return "Per process: not measured (a stack given by URL)" if steps else ""
    names = list(measured[0].cpu_ms_per_order_by_process or {})
    header = ["process", *(f"{step.offered_per_s:g}/s ms/order · MB" for step in measured)]
    rows = [
        [
            name,
            *(
                f"{(step.cpu_ms_per_order_by_process or {}).get(name, 0.0):.2f} · "
                f"{(step.peak_rss_mb or {}).get(name, 0.0):.0f}"
                for step in measured
            ),
        ]
        for name in names
    ]
    return "Per process: CPU ms per order · peak RSS\n" + _table(header, rows, indent=2)


def _correctness(result: RunResult) -> str:
    if not result.saga.steps:
        return ""
    lines = ["Correctness"]
    for step in result.saga.steps:
        lines += _checks(f"{step.offered_per_s:g}/s", step.checks)
    lines += _checks("run", result.saga.checks)
    return "\n".join(lines)


def _checks(label: str, checks: Iterable[Check]) -> list[str]:
    return [f"  {'✓' if check.ok else '✗'} {label:>6}  {check.name}: {check.detail}" for check in checks]


def _ratios(result: RunResult) -> str:
    ratios = result.ratios
    if ratios is None:
        return ""
    return "\n".join(
        [
            "Ratios against the relay chain of this run",
            "  best confirmed orders/s ÷ relay msgs/s: "
            f"{_num(ratios.confirmed_per_s_over_relay_msgs_per_s, '.4f')}",
            f"  placed→confirmed p50 at {_num(ratios.p50_step_offered_per_s, 'g')}/s ÷ relay p50: "
            f"{_num(ratios.p50_over_relay_p50, '.1f')}",
        ]
    )


def _ms(value: Latency, which: str) -> str:
    return _num(getattr(value, f"{which}_ms"), ",.0f")


def _num(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    pad = " " * indent
    lines = [pad + "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append(pad + "  ".join("-" * width for width in widths))
    lines += [
        pad + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)

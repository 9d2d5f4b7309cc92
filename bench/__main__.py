"""`python -m bench`: starts the stack (or uses the one given by URL), measures, prints, stops it all.

Exits non-zero when a correctness check fails or a section produced no numbers; never on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench.plan import FULL, QUICK
from bench.report import render, write_json
from bench.results import RunResult
from bench.run import run
from bench.stack import RUN_DIR, StackError


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _run_loop(main: Coroutine[Any, Any, RunResult]) -> RunResult:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional, as in the services
        return asyncio.run(_cancelled_by_signals(main))
    return uvloop.run(_cancelled_by_signals(main))


async def _cancelled_by_signals(main: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Ctrl-C or SIGTERM cancels the run, whose cleanup then stops every process it started."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await task


_STARTED = time.monotonic()


def _log(line: str) -> None:
    sys.stderr.write(f"bench {time.monotonic() - _STARTED:5.1f}s: {line}\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--rates", type=_rates, help="orders/s per saga step (default 25,50,100,200,300; quick: 5,10)"
    )
    parser.add_argument("--step-s", type=_seconds, help="seconds of load per step (default 20; quick: 3)")
    parser.add_argument("--quick", action="store_true", help="a few seconds of light load: proves it works")
    parser.add_argument(
        "--json", type=Path, default=RUN_DIR / "result.json", help="where to write the result"
    )
    args = parser.parse_args()
    plan = (QUICK if args.quick else FULL).with_rates(args.rates, args.step_s)
    try:
        result = _run_loop(run(plan, os.environ, _log))
    except StackError as error:
        _log(str(error))
        return 2
    except asyncio.CancelledError:
        _log("interrupted; every process it started is stopped")
        return 130
    sys.stdout.write(render(result) + "\n")
    write_json(result, args.json)
    _log(f"result written to {args.json}")
    failed = [check for step in result.saga.steps for check in step.checks if not check.ok]
    failed += [check for check in result.saga.checks if not check.ok]
    if failed or result.failures or not result.saga.steps:
        _log(f"FAILED: {len(failed)} correctness checks, {len(result.failures)} sections without numbers")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Processes of a local stack started from Python (the integration tests, the benchmark), each in its
own process group so that one can be signalled or killed alone, and a polling wait with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from devstack.stack import ProcessSpec, StackConfig, platform, wait_until_ready

T = TypeVar("T")


@dataclass
class Running:
    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class LocalStack:
    """The processes of one stack, each in its own process group so one can be killed alone."""

    config: StackConfig
    log_dir: Path
    running: dict[str, Running] = field(default_factory=dict)

    def start(self, spec: ProcessSpec) -> None:
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        process = subprocess.Popen(
            spec.argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running[spec.name] = Running(spec, process, log)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, wait_s: float = 20.0) -> int:
        return self.stop_together([name], sig, wait_s)[name]

    def restart(self, name: str) -> None:
        spec = self.running[name].spec if name in self.running else self._service_spec(name)
        if name in self.running:
            self.stop(name)
        self.start(spec)
        wait_until_ready([spec])

    def _service_spec(self, name: str) -> ProcessSpec:
        return next(spec for spec in platform(self.config) if spec.name == name)

    def stop_all(self) -> None:
        # Services first (they drain and leave their groups), infrastructure last; each group is
        # signalled at once so that their shutdowns overlap instead of adding up.
        self.stop_together([n for n in self.running if self.running[n].spec.ready_url])
        self.stop_together(list(self.running))

    def stop_together(
        self, names: list[str], sig: signal.Signals = signal.SIGTERM, wait_s: float = 20.0
    ) -> dict[str, int]:
        """Signal every named process, then wait for them all; their exit codes by name."""
        stopping = [self.running.pop(name) for name in names]
        for running in stopping:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, sig)
        codes = {}
        deadline = time.monotonic() + wait_s
        for running in stopping:
            try:
                code = running.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
                code = running.process.wait()
            running.log.close()
            codes[running.spec.name] = code
        return codes

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    what: str,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
) -> T:
    """Poll `probe` until `accept` holds; fail saying what was awaited and what was last seen."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await probe()
        if accept(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last seen: {last!r}")
        await asyncio.sleep(interval_s)

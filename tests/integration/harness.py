"""Starts the local stack for the integration tests and gives them handles on its processes."""

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

from devstack.stack import (
    ProcessSpec,
    StackConfig,
    infrastructure,
    prepare_run_dir,
    services,
    wait_until_ready,
)

T = TypeVar("T")

# Ports apart from `make run`'s defaults, so the tests can run beside a running stack.
TEST_PORTS = {"order": 18000, "inventory": 18001, "payment": 18002, "fraud": 18003, "notification": 18004}
# Short saga deadlines so the "service down" tests end in seconds, not minutes.
CHECKS_TIMEOUT_S = 8


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
        process = subprocess.Popen(  # noqa: S603 - argv built by devstack, no shell
            spec.argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running[spec.name] = Running(spec, process, log)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, wait_s: float = 20.0) -> int:
        running = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, sig)
        try:
            code = running.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(running.process.pid, signal.SIGKILL)
            code = running.process.wait()
        running.log.close()
        return code

    def restart(self, name: str) -> None:
        spec = self.running[name].spec if name in self.running else self._service_spec(name)
        if name in self.running:
            self.stop(name)
        self.start(spec)
        wait_until_ready([spec])

    def _service_spec(self, name: str) -> ProcessSpec:
        return next(spec for spec in services(self.config) if spec.name == name)

    def stop_all(self) -> None:
        # Services first (they drain and leave their groups), infrastructure last.
        for name in [n for n in self.running if self.running[n].spec.ready_url]:
            self.stop(name)
        for name in list(self.running):
            self.stop(name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def start_local_stack(root: Path) -> LocalStack:
    env = os.environ
    config = StackConfig.from_env(
        env,
        ports={name: int(env.get(f"TEST_{name.upper()}_PORT", port)) for name, port in TEST_PORTS.items()},
        kafka_port=int(env.get("TEST_KAFKA_PORT", 19092)),
        mongo_port=int(env.get("TEST_MONGO_PORT", 28017)),
        redis_url=env.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1"),
        run_dir=root / ".run" / "test",
        extra_env={
            "ENVIRONMENT": "test",
            "ORDER_CHECKS_TIMEOUT_S": str(CHECKS_TIMEOUT_S),
            "ORDER_DEADLINE_SCAN_INTERVAL_S": "0.5",
            "FRAUD_BLOCKED_CUSTOMERS": "cust-blocked-demo",
        },
    )
    prepare_run_dir(config)
    log_dir = config.run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    stack = LocalStack(config=config, log_dir=log_dir)
    try:
        for spec in infrastructure(config):
            stack.start(spec)
        for spec in services(config):
            stack.start(spec)
        wait_until_ready(services(config), deadline_s=180)
    except BaseException:  # noqa: BLE001 - stop what started, then re-raise with the logs
        tails = "\n".join(f"--- {name}\n{stack.log_tail(name)}" for name in list(stack.running))
        stack.stop_all()
        raise RuntimeError(f"the local stack did not come up; last log lines:\n{tails}") from None
    return stack


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

"""Runs one service process: the HTTP app and its background workers on one event loop.

SIGTERM/SIGINT stop the HTTP server and set `stop`; workers finish the batch in hand, commit and
leave their consumer group; then the clients are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from shared.errors import DependencyLost
from shared.logging import get_logger

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]
Cleanup = Callable[[], Awaitable[Any]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are ours (see serve); uvicorn's own handler would re-raise them at exit.
        yield


async def serve(
    *,
    service: str,
    app: FastAPI,
    host: str,
    port: int,
    workers: Sequence[Worker],
    cleanup: Sequence[Cleanup] = (),
) -> None:
    stop = asyncio.Event()
    server = _Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
    )

    def request_stop() -> None:
        log.info("stopping", service=service)
        stop.set()
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)

    tasks = [asyncio.create_task(_guard(worker, stop, request_stop)) for worker in workers]
    log.info("started", service=service, host=host, port=port)
    try:
        await server.serve()
    finally:
        request_stop()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for close in reversed(cleanup):
            try:
                await close()
            except Exception as error:  # noqa: BLE001 - one failed close must not skip the others
                log.warning("cleanup_failed", error=str(error))
        log.info("stopped", service=service)
    if any(isinstance(outcome, Exception) for outcome in outcomes):
        raise SystemExit(1)


async def _guard(worker: Worker, stop: asyncio.Event, request_stop: Callable[[], None]) -> None:
    """A worker that dies takes the process down, so the supervisor restarts it visibly."""
    name = getattr(worker, "__qualname__", repr(worker))
    try:
        await worker(stop)
    except DependencyLost as error:
        log.critical("giving_up", worker=name, reason=str(error))
        request_stop()
        raise
    except Exception:
        log.exception("worker_crashed", worker=name)
        request_stop()
        raise


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """`python -m services.NAME`: uvloop when available; a lost dependency exits with one clear line."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main())
    except DependencyLost as error:
        log.critical("giving_up", reason=str(error))
        raise SystemExit(1) from None


def every(interval_s: float, tick: Callable[[], Awaitable[Any]], *, name: str) -> Worker:
    """A background worker that runs `tick` every `interval_s` until stop; a failed tick is retried
    on the next one (the work it does is idempotent and re-read from the store)."""

    async def worker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await tick()
            except Exception as error:  # noqa: BLE001 - logged; the next tick retries
                log.warning("periodic_task_failed", task=name, error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    worker.__qualname__ = name
    return worker

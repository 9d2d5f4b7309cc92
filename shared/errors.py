"""Failures the plumbing retries until they pass, as opposed to poison that goes to a dead-letter topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")


class ConcurrentWrite(RuntimeError):
    """Another writer changed what this unit of work read; running it again on fresh state succeeds."""


class DependencyLost(RuntimeError):
    """The broker or a datastore kept failing for longer than allowed: the process exits so that its
    supervisor restarts it, rather than wait forever with its work uncommitted."""


class Outage:
    """How long a run of transient failures of one dependency has lasted; past the limit, give up."""

    def __init__(self, what: str, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what
        self._limit_s = limit_s
        self._clock = clock
        self._since: float | None = None

    def failed(self, error: BaseException) -> None:
        """Note one more failure; raises DependencyLost once the failures have lasted past the limit."""
        now = self._clock()
        if self._since is None:
            self._since = now
        if now - self._since > self._limit_s:
            raise DependencyLost(
                f"{self._what} kept failing for {now - self._since:.0f}s "
                f"(DEPENDENCY_OUTAGE_LIMIT_S={self._limit_s:g}): {type(error).__name__}: {error}"
            ) from error

    def recovered(self) -> None:
        self._since = None


def is_transient(error: BaseException) -> bool:
    """True when retrying the same events later will succeed: a lost race or an unreachable store.

    Such an error says nothing about the event, so dead-lettering it would lose a good event; the
    consumer retries with backoff instead (the partition waits, which is what an outage means).
    """
    if isinstance(error, ConcurrentWrite):
        return True
    if isinstance(error, AutoReconnect | ConnectionFailure | ServerSelectionTimeoutError):
        return True
    if isinstance(error, PyMongoError) and (
        error.has_error_label("TransientTransactionError")
        or error.has_error_label("UnknownTransactionCommitResult")
    ):
        return True
    return isinstance(error, RedisConnectionError | RedisTimeoutError)


async def retry_transient(
    unit: Callable[[], Awaitable[T]], *, attempts: int = 5, backoff_s: float = 0.02
) -> T:
    """Run `unit` again after a transient failure, a few times, for a caller who waits for the answer.

    An HTTP write that lost a race with the event consumers should not hand the client a 503 that
    a retry a few milliseconds later would have avoided; past `attempts`, the error goes up.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await unit()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")

"""Failures the plumbing retries until they pass, as opposed to poison that goes to a dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")


class ConcurrentWrite(RuntimeError):
    """Another writer changed what this unit of work read; running it again on fresh state succeeds."""


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

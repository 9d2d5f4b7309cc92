"""Failures the plumbing retries until they pass, as opposed to poison that goes to a dead-letter topic."""

from __future__ import annotations

from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


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

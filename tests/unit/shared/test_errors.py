"""Which failures are worth retrying, and the bounded retry HTTP writes use."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from shared.errors import ConcurrentWrite, is_transient, retry_transient

pytestmark = pytest.mark.unit


class Flaky:
    """Fails with `error` the first `failures` calls, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_a_write_conflict_is_transient_and_a_bad_value_is_not() -> None:
    labels = {"errorLabels": ["TransientTransactionError"]}
    conflict = OperationFailure("WriteConflict", code=112, details=labels)
    assert is_transient(conflict)
    assert is_transient(ConcurrentWrite("lost the race"))
    assert not is_transient(ValueError("negative quantity"))


async def test_a_lost_race_is_retried_until_it_passes() -> None:
    unit = Flaky(ConcurrentWrite("lost the race"), failures=2)
    assert await retry_transient(unit, backoff_s=0) == "done"
    assert unit.calls == 3


async def test_a_lasting_conflict_goes_up_after_the_last_attempt() -> None:
    unit = Flaky(ConcurrentWrite("still locked"), failures=10)
    with pytest.raises(ConcurrentWrite):
        await retry_transient(unit, attempts=3, backoff_s=0)
    assert unit.calls == 3


async def test_a_non_transient_error_is_not_retried() -> None:
    unit = Flaky(KeyError("no such merchant"), failures=1)
    with pytest.raises(KeyError):
        await retry_transient(unit, backoff_s=0)
    assert unit.calls == 1

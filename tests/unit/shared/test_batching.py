"""Group commit and admission: requests that arrive together share a write; overload is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import Admission, GroupCommit, Overloaded

pytestmark = pytest.mark.unit


class Recorder:
    """A write that records each call's items and fails for the items named in `bad`."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.bad = bad
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: Sequence[str]) -> None:
        self.calls.append(list(items))
        await self.release.wait()
        if self.bad & set(items):
            raise ValueError(f"bad: {sorted(self.bad & set(items))}")


async def test_an_idle_request_is_written_alone_at_once() -> None:
    write = Recorder()
    await GroupCommit(write).submit("a")
    assert write.calls == [["a"]]


async def submit_during_a_write(write: Recorder) -> list[BaseException | None]:
    """Submit "a", then "b", "c" and "d" while a's write is still in flight; every outcome."""
    write.release.clear()
    group = GroupCommit(write)
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(item)) for item in "bcd"]
    await asyncio.sleep(0)
    write.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


async def test_requests_arriving_during_a_write_share_the_next_one() -> None:
    write = Recorder()
    assert await submit_during_a_write(write) == [None] * 4
    assert write.calls == [["a"], ["b", "c", "d"]]


async def test_one_bad_item_fails_only_its_own_caller() -> None:
    write = Recorder(bad=frozenset({"c"}))
    outcomes = await submit_during_a_write(write)
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "NoneType", "ValueError", "NoneType"]
    assert write.calls == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]


async def test_a_batch_never_exceeds_its_limit() -> None:
    write = Recorder()
    write.release.clear()
    group = GroupCommit(write, max_batch=2)
    tasks = [asyncio.create_task(group.submit(item)) for item in "abcde"]
    await asyncio.sleep(0)
    write.release.set()
    await asyncio.gather(*tasks)
    assert write.calls == [["a", "b"], ["c", "d"], ["e"]]


async def test_past_max_pending_a_request_is_refused_without_waiting() -> None:
    write = Recorder()
    write.release.clear()
    group = GroupCommit(write, max_pending=2)
    waiting = [asyncio.create_task(group.submit(item)) for item in "ab"]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await group.submit("c")
    write.release.set()
    await asyncio.gather(*waiting)


def test_admission_refuses_past_its_limit_and_frees_a_place_when_a_request_ends() -> None:
    admission = Admission(limit=1)
    with admission.admit():
        with pytest.raises(Overloaded), admission.admit():
            pass
    with admission.admit():
        assert admission.in_progress == 1
    assert admission.in_progress == 0


def test_admission_refuses_new_requests_while_the_oldest_has_waited_too_long() -> None:
    now = [0.0]
    admission = Admission(limit=100, max_age_s=0.5, clock=lambda: now[0])
    with admission.admit():
        now[0] = 0.4
        with admission.admit():
            pass
        now[0] = 0.6
        with pytest.raises(Overloaded, match="waited 0.60s"), admission.admit():
            pass
    with admission.admit():
        assert admission.in_progress == 1, "once the slow request ends, requests are taken again"

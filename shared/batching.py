"""Group commit: requests that arrive while a write is in flight share the next write.

One write at a time per process; whatever queued meanwhile goes out together in the next one, so
an idle service answers after one write and a loaded one makes few, large writes (what both the
embedded MongoDB-wire server and a real mongod do best). Past `max_pending` queued requests a new
one is refused at once with Overloaded, instead of waiting behind a queue that only grows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Overloaded(RuntimeError):
    """Too many requests are already waiting; the caller should come back shortly."""


class Admission:
    """Bounds the requests of one kind in progress: at most `limit`, and none new once the oldest
    has been in progress for `max_age_s`; a refused request fails at once with Overloaded.

    A service that cannot keep up then answers "come back shortly" in microseconds, and the
    requests it took keep their latency, rather than every request waiting behind a growing queue.
    """

    def __init__(
        self, limit: int, max_age_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.max_age_s = max_age_s
        self._clock = clock
        self._started: dict[object, float] = {}  # in start order, so the first is the oldest

    @property
    def in_progress(self) -> int:
        return len(self._started)

    @contextmanager
    def admit(self) -> Iterator[None]:
        now = self._clock()
        if len(self._started) >= self.limit:
            raise Overloaded(f"{len(self._started)} requests are already in progress")
        oldest = next(iter(self._started.values()), now)
        if now - oldest > self.max_age_s:
            raise Overloaded(f"the oldest request in progress has waited {now - oldest:.2f}s")
        token = object()
        self._started[token] = now
        try:
            yield
        finally:
            del self._started[token]


class GroupCommit(Generic[T]):
    """`await submit(item)` returns once `write` stored the item, alone or with others.

    If a shared write fails, each of its items is written alone, so that each caller gets its own
    outcome: one bad item (a duplicate key, say) does not fail the requests it travelled with.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_batch: int = 200,
        max_pending: int = 1000,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def submit(self, item: T) -> None:
        if len(self._queue) >= self._max_pending:
            raise Overloaded(f"{len(self._queue)} requests are already waiting to be stored")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                await self._write([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to the callers, one by one below
                if len(batch) == 1:
                    _settle(batch[0][1], error)
                    continue
                for item, done in batch:
                    try:
                        await self._write([item])
                    except Exception as alone:  # noqa: BLE001 - this caller's own outcome
                        _settle(done, alone)
                    else:
                        _settle(done, None)
                continue
            for _, done in batch:
                _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the caller went away (its request was cancelled)
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)

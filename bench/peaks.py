"""A background sampler that keeps, for each name, the highest value seen while it runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping


class PeakSampler:
    """Calls `sample()` every `interval_s` between start() and stop(); stop() returns each peak.

    A sample that raises one of `tolerated` is skipped (the next one may succeed)."""

    def __init__(
        self,
        sample: Callable[[], Awaitable[Mapping[str, int]]],
        interval_s: float,
        tolerated: tuple[type[Exception], ...] = (),
    ) -> None:
        self._sample = sample
        self._interval_s = interval_s
        self._tolerated = tolerated
        self.peaks: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.peaks = {}
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, int]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._take()
        return dict(self.peaks)

    async def _run(self) -> None:
        while True:
            await self._take()
            await asyncio.sleep(self._interval_s)

    async def _take(self) -> None:
        try:
            values = await self._sample()
        except self._tolerated:
            return
        for name, value in values.items():
            self.peaks[name] = max(self.peaks.get(name, 0), value)

"""CPU time and memory of the stack's processes, read with psutil."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import psutil

from bench.peaks import PeakSampler

RSS_SAMPLE_INTERVAL_S = 0.5


class ProcessWatch:
    """The named processes of a stack, each counted with its descendants."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    @property
    def names(self) -> list[str]:
        return list(self._processes)

    def cpu_s(self) -> dict[str, float]:
        """User + system seconds so far, children included (exited ones through the parent's counters)."""
        return {name: _tree_cpu_s(process) for name, process in self._processes.items()}

    def rss(self) -> dict[str, int]:
        return {name: _tree_rss(process) for name, process in self._processes.items()}


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for member in _tree(process):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = member.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in _tree(process):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def own_cpu_s() -> float:
    """This process's own CPU: the load generator and the event tap, never counted as the stack's."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


class PeakRss(PeakSampler):
    """Samples every process's resident memory while running and keeps each one's peak."""

    def __init__(self, watch: ProcessWatch) -> None:
        super().__init__(self._rss, RSS_SAMPLE_INTERVAL_S)
        self._watch = watch

    async def _rss(self) -> Mapping[str, int]:
        return self._watch.rss()

"""How much of each measurement one run does: the full benchmark, or a quick check that it still works."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    quick: bool
    rates: tuple[float, ...]  # offered orders/s, one saga step each, until saturation
    step_s: float
    # How long a step's orders may take to settle after its load ended, and stock to come back.
    settle_s: float
    blast_messages: int  # sent at full speed through the broker and through the relay chain
    probe_rate: float  # messages/s for the latency of the broker and the relay chain
    probe_s: float
    datastore_s: float  # per datastore measurement
    # The saga starts no step it cannot finish before this many seconds since the run began.
    budget_s: float

    def with_rates(self, rates: tuple[float, ...] | None, step_s: float | None) -> Plan:
        return replace(self, rates=rates or self.rates, step_s=step_s or self.step_s)


FULL = Plan(
    quick=False,
    rates=(25, 50, 100, 200, 300),
    step_s=20,
    settle_s=90,
    blast_messages=30_000,
    probe_rate=300,
    probe_s=5,
    datastore_s=3,
    budget_s=480,
)

# A few seconds of light load: it keeps the benchmark working, it measures nothing worth comparing.
QUICK = Plan(
    quick=True,
    rates=(5, 10),
    step_s=3,
    settle_s=30,
    blast_messages=2_000,
    probe_rate=100,
    probe_s=1,
    datastore_s=0.5,
    budget_s=240,
)

"""The full saga under open-loop load, in steps of increasing rate until it saturates."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from bench.checks import Check, accepted_ids, order_checks, orders_placed, outcomes, stock_check
from bench.lag import LagSampler
from bench.load import REQUEST_TIMEOUT_S, Answer, open_loop
from bench.plan import Plan
from bench.product import INITIAL_STOCK, Stock, create_product, stock
from bench.results import SagaResult, StepResult
from bench.stats import latency, percentile
from bench.tap import OrderEventsTap
from bench.watch import PeakRss, ProcessWatch, own_cpu_s

# A step saturates when its confirmations fall this far behind the offered rate, or latency blows up.
MIN_CONFIRMED_SHARE = 0.9
MAX_SHED_SHARE = 0.01
MAX_POST_P99_MS = 2_000.0
MAX_PLACED_TO_CONFIRMED_P99_MS = 10_000.0
STOCK_SETTLE_S = 30.0
MB = 1024 * 1024


@dataclass(frozen=True)
class SagaTarget:
    gateway_url: str
    inventory_url: str
    bootstrap: str
    watch: ProcessWatch | None  # None: a stack given by URL, whose processes are not ours to watch


class Saga:
    def __init__(self, target: SagaTarget, plan: Plan, run_id: str, log: Callable[[str], None]) -> None:
        self._target = target
        self._log = log
        self._plan = plan
        self._run_id = run_id
        self._customers = itertools.count()
        self._tap = OrderEventsTap(target.bootstrap)
        self._lag = LagSampler(target.bootstrap)
        self._answers: list[Answer] = []
        self._last_stock_check: Check | None = None

    async def run(self, budget_ends_at: float) -> SagaResult:
        result = SagaResult()
        sku = await create_product(self._target.inventory_url, self._target.gateway_url, self._run_id)
        result.sku = sku
        self._log(f"product {sku} listed by the gateway")
        await self._tap.start()
        await self._lag.open()
        try:
            result.stopped_because = "every rate was run"
            for rate in self._plan.rates:
                longest = self._plan.step_s + REQUEST_TIMEOUT_S + self._plan.settle_s + STOCK_SETTLE_S
                if time.monotonic() + longest > budget_ends_at:
                    result.stopped_because = f"the time budget leaves no room for the {rate:g}/s step"
                    break
                self._log(f"saga step: {rate:g} orders/s for {self._plan.step_s:g} s")
                step = await self._step(rate, sku)
                result.steps.append(step)
                if step.saturated and not self._plan.quick:
                    result.stopped_because = f"saturated at {rate:g}/s: {step.saturated}"
                    break
            result.checks = order_checks(self._tap, self._answers)
            if self._last_stock_check is not None:
                result.checks.append(self._last_stock_check)
        finally:
            await self._tap.stop()
            await self._lag.close()
        return result

    async def _step(self, rate: float, sku: str) -> StepResult:
        watch = self._target.watch
        cpu_before = watch.cpu_s() if watch else None
        bench_cpu_before = own_cpu_s()
        rss = PeakRss(watch) if watch else None
        if rss:
            rss.start()
        self._lag.start()
        answers = await open_loop(
            self._target.gateway_url,
            rate=rate,
            duration_s=self._plan.step_s,
            sku=sku,
            customer=lambda _: f"bench-{self._run_id}-{next(self._customers)}",
        )
        answered_at = time.monotonic()
        self._log(f"every order answered ({len(answers)}); waiting for them to settle")
        self._answers += answers
        still_open = await self._tap.wait_settled(
            lambda: orders_placed(self._tap, answers), self._plan.settle_s
        )
        settled_after = None if still_open else time.monotonic() - answered_at
        cpu_after = watch.cpu_s() if watch else None
        bench_cpu = own_cpu_s() - bench_cpu_before
        peaks = await rss.stop() if rss else None
        max_lag = await self._lag.stop()
        stock_check = await self._stock_check(sku)
        self._last_stock_check = stock_check

        placed = orders_placed(self._tap, answers)
        ended = outcomes(self._tap, placed)
        settled = ended.orders - ended.still_open
        trails = [self._tap.trail(order_id) for order_id in placed]
        confirmed_at = sorted(at for trail in trails if (at := trail.confirmed_at) is not None)
        placed_to_confirmed = [
            (trail.confirmed_at - trail.placed_at).total_seconds()
            for trail in trails
            if trail.confirmed_at is not None and trail.placed_at is not None
        ]
        stack_cpu = (
            {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
            if cpu_before is not None and cpu_after is not None
            else None
        )
        answered = [answer for answer in answers if answer.status]
        step = StepResult(
            offered_per_s=rate,
            load_s=self._plan.step_s,
            sent=len(answers),
            answers={str(status): n for status, n in sorted(Counter(a.status for a in answers).items())},
            accepted=len(accepted_ids(answers)),
            confirmed=ended.confirmed,
            rejected=ended.rejected,
            cancelled=ended.cancelled,
            still_open=ended.still_open,
            confirmed_per_s=_rate(confirmed_at),
            post=latency([answer.latency_s for answer in answered]),
            generator_late_p99_ms=(
                percentile(sorted(a.late_s for a in answers), 0.99) * 1000 if answers else None
            ),
            placed_to_confirmed=latency(placed_to_confirmed),
            settled_after_answers_s=settled_after,
            cpu_ms_per_order=_per_order(sum(stack_cpu.values()), settled) if stack_cpu else None,
            cpu_ms_per_order_by_process=(
                {name: _per_order(seconds, settled) or 0.0 for name, seconds in stack_cpu.items()}
                if stack_cpu and settled
                else None
            ),
            bench_cpu_ms_per_order=_per_order(bench_cpu, settled),
            peak_rss_mb={name: size / MB for name, size in peaks.items()} if peaks else None,
            max_lag=max_lag,
            checks=[*order_checks(self._tap, answers), stock_check],
            saturated=None,
        )
        return replace(step, saturated=saturation(step))

    async def _stock_check(self, sku: str) -> Check:
        """Wait until inventory's stock matches the confirmed orders so far (or the deadline passes)."""
        confirmed_units = outcomes(self._tap, orders_placed(self._tap, self._answers)).confirmed_units
        expected = INITIAL_STOCK - confirmed_units
        deadline = time.monotonic() + STOCK_SETTLE_S
        while True:
            seen: Stock = await stock(self._target.inventory_url, sku)
            conserved = seen.available == expected and seen.reserved == 0
            if conserved or time.monotonic() > deadline:
                return stock_check(seen.available, seen.reserved, expected)
            await asyncio.sleep(0.2)


def _rate(ordered_times: Sequence[datetime]) -> float | None:
    """Events per second between the 10th and the 90th percentile of `ordered_times`.

    The first and last tenth are left out: how spread out the first and the last latencies happen
    to be says nothing of the rate, and in a short step it would weigh as much as the rate itself.
    """
    if len(ordered_times) < 2:
        return None
    first, last = (0, len(ordered_times) - 1) if len(ordered_times) < 20 else _interdecile(len(ordered_times))
    span = (ordered_times[last] - ordered_times[first]).total_seconds()
    return (last - first) / span if span > 0 else None


def _interdecile(count: int) -> tuple[int, int]:
    return round(0.1 * (count - 1)), round(0.9 * (count - 1))


def _per_order(seconds: float, orders: int) -> float | None:
    return seconds * 1000 / orders if orders else None


def saturation(step: StepResult) -> str | None:
    """Why this step is past what the stack sustains, or None."""
    if step.still_open:
        return f"{step.still_open} orders still open after the settle deadline"
    if step.confirmed_per_s is None:
        return "fewer than two orders confirmed"
    if step.confirmed_per_s < MIN_CONFIRMED_SHARE * step.offered_per_s:
        return f"{step.confirmed_per_s:.1f} confirmed/s < {MIN_CONFIRMED_SHARE:.0%} of offered"
    if step.shed > MAX_SHED_SHARE * step.sent:
        return f"{step.shed} of {step.sent} orders shed with 429/503"
    if (step.post.p99_ms or 0) > MAX_POST_P99_MS:
        return f"POST p99 {step.post.p99_ms:.0f} ms > {MAX_POST_P99_MS:.0f} ms"
    if (step.placed_to_confirmed.p99_ms or 0) > MAX_PLACED_TO_CONFIRMED_P99_MS:
        return (
            f"placed→confirmed p99 {step.placed_to_confirmed.p99_ms:.0f} ms "
            f"> {MAX_PLACED_TO_CONFIRMED_P99_MS:.0f} ms"
        )
    return None

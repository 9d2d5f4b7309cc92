"""One benchmark run: the ceilings on a quiet broker and a fresh datastore, then the saga's steps."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from bench.ceilings.broker import measure_broker
from bench.ceilings.datastore import measure_datastore
from bench.ceilings.relay import measure_relay
from bench.plan import Plan
from bench.results import DatastoreRate, Ratios, RunResult, SagaResult
from bench.saga import Saga, SagaTarget
from bench.stack import BenchStack
from bench.watch import ProcessWatch
from shared.settings import SharedSettings

T = TypeVar("T")


async def run(plan: Plan, env: Mapping[str, str], log: Callable[[str], None]) -> RunResult:
    started = time.monotonic()
    stack = BenchStack.create(env)
    result = RunResult(
        mode="quick" if plan.quick else "full",
        stack="local" if stack.local else "external",
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        cpus=os.cpu_count() or 0,
        plan=plan,
    )

    async def section(name: str, measure: Callable[[], Awaitable[T]]) -> T | None:
        log(f"{name}…")
        try:
            return await measure()
        except Exception as error:  # noqa: BLE001 - one failed section must not hide the others' numbers
            result.failures.append(f"{name}: {type(error).__name__}: {error}")
            log(f"{name} failed: {error}")
            return None

    try:
        log("starting the broker and the datastores" if stack.local else "using the stack given by URL")
        await stack.start_infrastructure()
        settings = SharedSettings(kafka_bootstrap_servers=stack.endpoints.bootstrap)
        result.ceilings.broker = await section("broker ceiling", lambda: measure_broker(settings, plan))
        result.ceilings.relay = await section(
            "relay-chain ceiling", lambda: measure_relay(settings, plan, stack.helpers, stack.helper_env)
        )

        async def datastore() -> list[DatastoreRate]:
            try:
                return await measure_datastore(await stack.start_datastore(), plan)
            finally:
                stack.stop_datastore()

        async def saga() -> SagaResult:
            if stack.local:
                log("starting the services")
            await stack.start_services()
            target = SagaTarget(
                gateway_url=stack.endpoints.gateway,
                inventory_url=stack.endpoints.inventory,
                bootstrap=stack.endpoints.bootstrap,
                watch=ProcessWatch(stack.pids()) if stack.local else None,
            )
            return await Saga(target, plan, uuid.uuid4().hex[:8], log).run(started + plan.budget_s)

        result.ceilings.datastore = await section("datastore ceiling", datastore) or []
        result.saga = await section("saga", saga) or SagaResult()
    finally:
        log("stopping")
        stack.stop()
    _note_empty_sections(result)
    result.ratios = ratios(result)
    result.duration_s = time.monotonic() - started
    return result


def _note_empty_sections(result: RunResult) -> None:
    """Sections that ran without failing yet measured nothing count as failures too."""
    empty = [f"{rate.operation} × {rate.clients}" for rate in result.ceilings.datastore if not rate.ops_per_s]
    if empty:
        result.failures.append(f"datastore ceiling: no write succeeded for {', '.join(empty)}")
    if result.saga.sku is not None and not result.saga.steps:
        result.failures.append(f"saga: no step was run ({result.saga.stopped_because})")
    if result.saga.steps and not any(step.confirmed for step in result.saga.steps):
        result.failures.append("saga: no order was confirmed in any step")


def ratios(result: RunResult) -> Ratios | None:
    relay, steps = result.ceilings.relay, result.saga.steps
    if relay is None or not steps:
        return None
    best = max((step.confirmed_per_s or 0.0 for step in steps), default=0.0)
    lightest = min(steps, key=lambda step: step.offered_per_s)
    p50, relay_p50 = lightest.placed_to_confirmed.p50_ms, relay.latency.p50_ms
    return Ratios(
        confirmed_per_s_over_relay_msgs_per_s=best / relay.msgs_per_s if relay.msgs_per_s else None,
        p50_over_relay_p50=p50 / relay_p50 if p50 is not None and relay_p50 else None,
        p50_step_offered_per_s=lightest.offered_per_s,
    )

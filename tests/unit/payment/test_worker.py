"""The operations worker's loop: bounded calls in flight, woken at once, polling for what falls due,
sharing the work with another replica, and finishing the calls in hand when stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect

from services.payment import metrics
from services.payment.domain import Operation, PaymentStatus
from services.payment.handlers import PaymentService
from services.payment.worker import OperationWorker
from shared.contracts import PaymentAuthorized
from tests.unit.payment.fakes import LEASE, World, card_request, make_world, pay, types, unavailable, until

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> World:
    return make_world()


def worker_for(
    service: PaymentService, *, concurrency: int = 8, poll_s: float = 3600.0, owner: str = "a"
) -> OperationWorker:
    return OperationWorker(
        service, concurrency=concurrency, poll_s=poll_s, lease=LEASE, owner=owner, outage_limit_s=60.0
    )


@asynccontextmanager
async def running(*workers: OperationWorker) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


def authorized_count(world: World) -> Callable[[], int]:
    return lambda: sum(p.status is PaymentStatus.AUTHORIZED for p in world.store.payments.values())


async def test_no_more_calls_than_the_concurrency_are_in_flight(world: World) -> None:
    world.card.gate = asyncio.Event()
    await world.handle(*(card_request(f"ord-{n}") for n in range(20)))

    async with running(worker_for(world.service, concurrency=8)):
        await until(lambda: world.card.in_flight == 8)
        for _ in range(20):
            await asyncio.sleep(0)  # the loop's chance to (wrongly) start a ninth
        assert world.card.in_flight == 8
        assert metrics.OPERATIONS_IN_FLIGHT._value.get() == 8
        world.card.gate.set()
        await until(lambda: authorized_count(world)() == 20)

    assert world.card.max_in_flight == 8
    assert sorted(world.card.made("authorize")) == sorted(pay(f"ord-{n}") for n in range(20))
    assert metrics.OPERATIONS_IN_FLIGHT._value.get() == 0


async def test_stored_operations_wake_the_worker_at_once(world: World) -> None:
    async with running(worker_for(world.service, poll_s=3600.0)):
        await asyncio.sleep(0)
        await world.handle(card_request())

        await until(lambda: authorized_count(world)() == 1)

    assert types(world.store.outbox) == [PaymentAuthorized.TYPE]


async def test_an_operation_due_later_is_found_by_polling(world: World) -> None:
    world.card.script["authorize"] = [unavailable()]
    async with running(worker_for(world.service, poll_s=0.01)):
        await world.handle(card_request())
        await until(lambda: world.queued() != [] and world.queued()[0].attempts == 1)
        world.clock.advance(timedelta(seconds=1))

        await until(lambda: authorized_count(world)() == 1)

    assert world.card.made("authorize") == [pay(), pay()]


async def test_two_replicas_share_the_work_and_run_each_operation_once(world: World) -> None:
    await world.handle(*(card_request(f"ord-{n}") for n in range(30)))

    async with running(
        worker_for(world.service, concurrency=4, owner="a"),
        worker_for(world.service, concurrency=4, owner="b"),
    ):
        await until(lambda: authorized_count(world)() == 30)

    assert sorted(world.card.made("authorize")) == sorted(pay(f"ord-{n}") for n in range(30))
    assert types(world.store.outbox) == [PaymentAuthorized.TYPE] * 30


async def test_a_stopped_worker_finishes_the_calls_in_hand(world: World) -> None:
    world.card.gate = asyncio.Event()
    await world.handle(card_request())
    stop = asyncio.Event()
    task = asyncio.create_task(worker_for(world.service).run(stop))
    await until(lambda: world.card.in_flight == 1)

    stop.set()
    await asyncio.sleep(0)
    assert not task.done(), "it waits for the call in hand"
    world.card.gate.set()
    await asyncio.wait_for(task, 5)

    assert world.store.payments[pay()].status is PaymentStatus.AUTHORIZED
    assert world.queued() == []


async def test_a_datastore_error_while_claiming_is_retried(world: World) -> None:
    real_claim = world.store.claim_operations
    failures = 0

    async def flaky(*args: object, **kwargs: object) -> list[Operation]:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise AutoReconnect("primary stepped down")
        return await real_claim(*args, **kwargs)  # type: ignore[arg-type]

    world.store.claim_operations = flaky  # type: ignore[method-assign]
    await world.handle(card_request())

    async with running(worker_for(world.service, poll_s=0.01)):
        await until(lambda: authorized_count(world)() == 1)

    assert failures == 2


async def test_an_adapter_fault_leaves_the_operation_to_run_again_when_its_claim_lapses(world: World) -> None:
    world.card.script["authorize"] = [RuntimeError("adapter bug")]
    await world.handle(card_request())

    async with running(worker_for(world.service, poll_s=0.01)):
        await until(lambda: world.card.made("authorize") == [pay()])
        await until(lambda: world.card.in_flight == 0)
        assert world.queued()[0].claim is not None, "still held: nothing was stored"
        world.clock.advance(LEASE)

        await until(lambda: authorized_count(world)() == 1)

    assert world.card.made("authorize") == [pay(), pay()]

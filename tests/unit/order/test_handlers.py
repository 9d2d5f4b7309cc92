"""Placing orders, consumed batches and the deadline sweeper, against the in-memory twins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from services.order.domain import CatalogItem, Deadlines, Order, OrderStatus, RequestedItem, UnknownProducts
from services.order.handlers import (
    IdempotencyKeyReused,
    OrderService,
    PlaceOrder,
    UnknownOrder,
    enforce_deadlines,
    handle_batch,
    place_order,
)
from shared.batching import Admission, Overloaded
from shared.contracts import (
    DeclineReason,
    Event,
    FraudDecision,
    FraudScored,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PaymentAuthorized,
    PaymentFailed,
    PaymentMethod,
    PaymentRequested,
    ProductKind,
    ProductUpserted,
    Shortage,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
    decode_data,
)
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.samples import ADDRESS, T0, delivery

pytestmark = pytest.mark.unit

DEADLINES = Deadlines(checks=timedelta(seconds=30), review=timedelta(hours=1), payment=timedelta(minutes=2))
LEASE = timedelta(seconds=30)
CATALOG = [
    CatalogItem("TEA", "Longjing tea", "m-1", ProductKind.PHYSICAL, 8800),
    CatalogItem("CUP", "Celadon cup", "m-2", ProductKind.PHYSICAL, 4550),
    CatalogItem("OLD", "Retired", "m-1", ProductKind.PHYSICAL, 100, active=False),
]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ChangedAfterClaim(InMemoryOrderStore):
    """A consumer reserves stock for `order_id` right after a sweeper claimed it (once)."""

    order_id: str | None = None

    async def claim_overdue(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Order]:
        claimed = await super().claim_overdue(now, limit, owner, lease)
        if self.order_id is not None:
            order = await self.get(self.order_id)
            self.order_id = None
            assert order is not None
            order.stock_reserved(now, DEADLINES)
            async with self.transaction("order") as tx:
                await tx.save_changed([order])
        return claimed


@pytest.fixture
def store() -> InMemoryOrderStore:
    return InMemoryOrderStore()


@pytest.fixture
def numbers() -> InMemoryOrderNumbers:
    return InMemoryOrderNumbers()


@pytest.fixture
async def service(store: InMemoryOrderStore, numbers: InMemoryOrderNumbers) -> OrderService:
    async with store.transaction("seed") as tx:
        await tx.upsert_catalog(CATALOG)
    return sweeper(store, numbers, "sweeper-a")


def sweeper(store: InMemoryOrderStore, numbers: InMemoryOrderNumbers, owner: str) -> OrderService:
    return OrderService(
        store=store, numbers=numbers, deadlines=DEADLINES, sweeper_id=owner, sweep_lease=LEASE, clock=Clock()
    )


def clock_of(service: OrderService) -> Clock:
    assert isinstance(service.clock, Clock)
    return service.clock


def emitted(store: InMemoryOrderStore) -> list[Event]:
    return [decode_data(envelope) for envelope in store.outbox]


def command(*items: tuple[str, int], customer_id: str = "c-1", key: str | None = None) -> PlaceOrder:
    return PlaceOrder(
        customer_id=customer_id,
        items=[RequestedItem(sku, quantity) for sku, quantity in items or [("TEA", 1)]],
        shipping_address=ADDRESS,
        payment_method=PaymentMethod.WECHAT_PAY,
        payment_token="tok_approve",
        idempotency_key=key,
    )


async def placed(service: OrderService, *items: tuple[str, int]) -> Order:
    return (await place_order(service, command(*items))).order


async def stored(service: OrderService, order_id: str) -> Order:
    order = await service.store.get(order_id)
    assert order is not None
    return order


def reserved(order_id: str) -> StockReserved:
    return StockReserved(order_id=order_id, lines=[StockLine(sku="TEA", quantity=1)], expires_at=T0)


def approved(order_id: str) -> FraudScored:
    return FraudScored(order_id=order_id, decision=FraudDecision.APPROVE, score=3)


def authorized(order_id: str) -> PaymentAuthorized:
    return PaymentAuthorized(
        order_id=order_id,
        payment_id="pay-1",
        amount_fen=8800,
        method=PaymentMethod.WECHAT_PAY,
        provider_ref="wx-1",
    )


async def awaiting_payment(service: OrderService) -> Order:
    order = await placed(service)
    await handle_batch(service, [delivery(reserved(order.order_id)), delivery(approved(order.order_id))])
    return await stored(service, order.order_id)


# --- placing orders ------------------------------------------------------------------------


async def test_an_order_is_priced_from_the_catalog_replica_and_announced_with_order_placed(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    placement = await place_order(service, command(("TEA", 2), ("CUP", 1)))
    order = placement.order
    assert placement.created and order.status is OrderStatus.PENDING
    assert [(line.sku, line.unit_price_fen, line.quantity) for line in order.lines] == [
        ("TEA", 8800, 2),
        ("CUP", 4550, 1),
    ]
    assert order.order_no == "20261125-000001"
    assert await stored(service, order.order_id) == order
    [announced] = emitted(store)
    assert isinstance(announced, OrderPlaced)
    assert (announced.order_id, announced.total_fen) == (order.order_id, 2 * 8800 + 4550)
    assert store.outbox[0].correlation_id == order.order_id


async def test_an_idempotency_key_replay_returns_the_first_order_and_places_no_other(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    first = await place_order(service, command(("TEA", 1), key="k-1"))
    replay = await place_order(service, command(("TEA", 1), key="k-1"))
    assert replay.created is False and replay.order == first.order
    assert len(store.orders) == 1 and len(store.outbox) == 1


async def test_the_same_idempotency_key_with_another_body_is_refused(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    await place_order(service, command(("TEA", 1), key="k-1"))
    with pytest.raises(IdempotencyKeyReused):
        await place_order(service, command(("TEA", 2), key="k-1"))
    assert len(store.orders) == 1


async def test_an_idempotency_key_belongs_to_its_customer(service: OrderService) -> None:
    mine = await place_order(service, command(key="k-1", customer_id="c-1"))
    theirs = await place_order(service, command(key="k-1", customer_id="c-2"))
    assert theirs.created and theirs.order.order_id != mine.order.order_id


async def test_unknown_and_inactive_skus_are_refused_and_nothing_is_placed(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    with pytest.raises(UnknownProducts) as refused:
        await place_order(service, command(("TEA", 1), ("NOPE", 1), ("OLD", 1)))
    assert refused.value.skus == ["NOPE", "OLD"]
    assert store.orders == {} and store.outbox == []


async def test_a_taken_order_number_moves_the_sequence_past_the_stored_orders_and_places_the_order(
    service: OrderService, numbers: InMemoryOrderNumbers
) -> None:
    first = await placed(service)
    numbers.forget()  # Redis restarted without its counters; Mongo kept the orders
    second = await placed(service)
    assert (first.order_no, second.order_no) == ("20261125-000001", "20261125-000002")
    assert await stored(service, second.order_id) == second
    assert await numbers.next(T0) == "20261125-000003"


# --- consumed batches ----------------------------------------------------------------------


async def test_stock_reserved_and_fraud_approved_request_payment_once(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    approval = delivery(approved(order.order_id), correlation_id="corr-7")
    await handle_batch(service, [delivery(reserved(order.order_id)), approval])
    after = await stored(service, order.order_id)
    assert after.status is OrderStatus.AWAITING_PAYMENT
    assert after.deadline_at == T0 + DEADLINES.payment
    requests = [e for e in emitted(store) if isinstance(e, PaymentRequested)]
    assert [(r.order_id, r.amount_fen) for r in requests] == [(order.order_id, 8800)]
    reply = store.outbox[-1]
    assert (reply.causation_id, reply.correlation_id) == (approval.envelope.id, "corr-7")


async def test_rejected_stock_rejects_the_order_as_out_of_stock(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    short = Shortage(sku="TEA", quantity=1, available=0)
    await handle_batch(service, [delivery(StockRejected(order_id=order.order_id, shortages=[short]))])
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.REJECTED, OrderEndReason.OUT_OF_STOCK)
    rejected = emitted(store)[-1]
    assert isinstance(rejected, OrderRejected) and rejected.reason is OrderEndReason.OUT_OF_STOCK
    assert "TEA (asked 1, 0 left)" in rejected.detail


async def test_an_authorized_payment_confirms_the_order(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    await handle_batch(service, [delivery(authorized(order.order_id))])
    after = await stored(service, order.order_id)
    assert (after.status, after.payment_id, after.deadline_at) == (OrderStatus.CONFIRMED, "pay-1", None)
    confirmed = emitted(store)[-1]
    assert isinstance(confirmed, OrderConfirmed) and confirmed.payment_id == "pay-1"


async def test_a_declined_payment_cancels_the_order(service: OrderService, store: InMemoryOrderStore) -> None:
    order = await awaiting_payment(service)
    failed = PaymentFailed(
        order_id=order.order_id,
        payment_id="pay-1",
        method=PaymentMethod.WECHAT_PAY,
        reason=DeclineReason.CARD_DECLINED,
    )
    await handle_batch(service, [delivery(failed)])
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_DECLINED)
    assert isinstance(emitted(store)[-1], OrderCancelled)


async def test_a_redelivered_event_is_applied_once(service: OrderService, store: InMemoryOrderStore) -> None:
    order = await placed(service)
    reservation, approval = delivery(reserved(order.order_id)), delivery(approved(order.order_id))
    await handle_batch(service, [reservation, reservation])
    await handle_batch(service, [reservation, approval])
    await handle_batch(service, [approval])
    after = await stored(service, order.order_id)
    assert after.version == 3  # placed, reserved, approved: one write each
    assert [type(e) for e in emitted(store)] == [OrderPlaced, PaymentRequested]
    assert await store.unapplied("order", [reservation, approval]) == []


async def test_an_event_for_an_unknown_order_raises_and_is_not_marked_applied(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    known = await placed(service)
    stray = delivery(reserved("o-never-placed"))
    with pytest.raises(UnknownOrder):
        await handle_batch(service, [delivery(reserved(known.order_id)), stray])
    assert (await stored(service, known.order_id)).status is OrderStatus.PENDING
    assert await store.unapplied("order", [stray]) == [stray]


async def test_events_the_order_service_does_not_handle_are_passed_over(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    released = StockReleased(
        order_id="o-elsewhere", lines=[StockLine(sku="TEA", quantity=1)], reason=OrderEndReason.FRAUD
    )
    passed_over = delivery(released)
    await handle_batch(service, [passed_over])
    assert store.ledger.processed == set(), "an event that changes nothing is not recorded"
    assert store.outbox == []


async def test_product_upserted_updates_the_catalog_replica_that_prices_orders(service: OrderService) -> None:
    repriced = ProductUpserted(sku="TEA", name="Longjing tea", merchant_id="m-1", price_fen=9900)
    retired = ProductUpserted(sku="CUP", name="Celadon cup", merchant_id="m-2", price_fen=4550, active=False)
    new = ProductUpserted(sku="POT", name="Clay pot", merchant_id="m-1", price_fen=20000)
    await handle_batch(service, [delivery(repriced), delivery(retired), delivery(new)])
    assert [(item.sku, item.price_fen) for item in await service.store.catalog_page(10)] == [
        ("POT", 20000),
        ("TEA", 9900),
    ]
    assert (await placed(service, ("TEA", 1), ("POT", 1))).total_fen == 9900 + 20000
    with pytest.raises(UnknownProducts):
        await placed(service, ("CUP", 1))


# --- the deadline sweeper ------------------------------------------------------------------


async def test_an_order_with_no_stock_answer_in_time_is_rejected_with_stock_timeout(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    clock_of(service).now = T0 + DEADLINES.checks
    assert await enforce_deadlines(service) == 1
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.REJECTED, OrderEndReason.STOCK_TIMEOUT)
    rejected = emitted(store)[-1]
    assert isinstance(rejected, OrderRejected) and rejected.reason is OrderEndReason.STOCK_TIMEOUT
    assert store.outbox[-1].correlation_id == order.correlation_id


async def test_an_order_with_no_payment_answer_in_time_is_cancelled_with_payment_timeout(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    clock_of(service).now = T0 + DEADLINES.payment
    assert await enforce_deadlines(service) == 1
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_TIMEOUT)
    cancelled = emitted(store)[-1]
    assert isinstance(cancelled, OrderCancelled) and cancelled.reason is OrderEndReason.PAYMENT_TIMEOUT


async def test_an_order_not_yet_overdue_is_left_alone(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    clock_of(service).now = T0 + DEADLINES.checks - timedelta(milliseconds=1)
    assert await enforce_deadlines(service) == 0
    assert await stored(service, order.order_id) == order
    assert [type(e) for e in emitted(store)] == [OrderPlaced]


async def test_an_order_changed_after_it_was_claimed_costs_only_that_order_and_the_next_tick_ends_it(
    numbers: InMemoryOrderNumbers,
) -> None:
    store = ChangedAfterClaim()
    service = sweeper(store, numbers, "sweeper-a")
    async with store.transaction("seed") as tx:
        await tx.upsert_catalog(CATALOG)
    first, changed, last = [await placed(service) for _ in range(3)]
    store.order_id = changed.order_id
    clock_of(service).now = T0 + DEADLINES.checks
    assert await enforce_deadlines(service) == 2
    assert [(await stored(service, o.order_id)).status for o in (first, changed, last)] == [
        OrderStatus.REJECTED,
        OrderStatus.PENDING,
        OrderStatus.REJECTED,
    ]
    assert await enforce_deadlines(service) == 1
    assert (await stored(service, changed.order_id)).reason is OrderEndReason.FRAUD_TIMEOUT


async def test_two_sweepers_never_handle_the_same_order(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    other = sweeper(store, numbers, "sweeper-b")
    orders = [await placed(service) for _ in range(4)]
    now = T0 + DEADLINES.checks
    clock_of(service).now = clock_of(other).now = now
    # Sweeper A is mid-tick: it has claimed two orders and not ended them yet.
    held_by_a = {o.order_id for o in await store.claim_overdue(now, 2, service.sweeper_id, LEASE)}
    before_b = len(store.outbox)
    assert await enforce_deadlines(other) == 2
    before_a = len(store.outbox)
    assert await enforce_deadlines(service) == 2
    ended_by_b = {envelope.subject for envelope in store.outbox[before_b:before_a]}
    ended_by_a = {envelope.subject for envelope in store.outbox[before_a:]}
    assert ended_by_a == held_by_a and not ended_by_a & ended_by_b
    assert ended_by_a | ended_by_b == {o.order_id for o in orders}


async def test_a_dead_sweepers_orders_are_taken_over_once_its_claim_expires(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    other = sweeper(store, numbers, "sweeper-b")
    order = await placed(service)
    now = T0 + DEADLINES.checks
    await store.claim_overdue(now, 10, service.sweeper_id, LEASE)  # then sweeper A died
    clock_of(other).now = now + LEASE - timedelta(seconds=1)
    assert await enforce_deadlines(other) == 0
    clock_of(other).now = now + LEASE
    assert await enforce_deadlines(other) == 1
    assert (await stored(other, order.order_id)).reason is OrderEndReason.STOCK_TIMEOUT


async def test_past_its_admission_limit_placing_an_order_is_refused_at_once(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    service.admission = Admission(limit=1)
    with service.admission.admit(), pytest.raises(Overloaded):
        await placed(service, ("TEA", 1))
    assert store.orders == {}, "a refused order leaves no trace"
    assert (await placed(service, ("TEA", 1))).status is OrderStatus.PENDING

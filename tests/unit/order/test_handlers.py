"""Placing, finding and cancelling orders, consumed batches and the deadline sweeper, against the
in-memory twins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from services.order.domain import CannotCancel, Order, OrderStatus, PayAction, PaymentStatus, RequestedItem
from services.order.handlers import (
    IdempotencyKeyReused,
    InvalidOrder,
    OrderService,
    UnknownOrder,
    cancel_order,
    enforce_deadlines,
    find_by_contact,
    handle_batch,
    place_order,
    review_request,
)
from services.order.store import ConcurrentUpdate
from shared.batching import Admission, Overloaded
from shared.contracts import (
    DeclineReason,
    Event,
    MerchantStatus,
    MerchantUpserted,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderPlaced,
    OrderRejected,
    PayActionType,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentRequested,
    PaymentVoided,
    PriceTier,
    ProductUpserted,
    RefundReason,
    Shortage,
    StockLine,
    StockRejected,
    StockRejectReason,
    StockReleased,
    decode_data,
)
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.order.factories import (
    CATALOG,
    CLEAR_TOKEN,
    DEADLINES,
    LEASE,
    PUER_LIMIT,
    TOKEN_OPENER,
    ObservedWatch,
    authorized,
    clock_of,
    command,
    order_service,
    reserved,
    scored,
    stored,
)
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

GUEST_CONTACT = "email:li.lei@example.com"


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


@dataclass
class ChangedAfterRead(InMemoryOrderStore):
    """The saga saves `order_id` right after each of its next `races` reads, as a consumer racing
    with a customer's cancel would."""

    order_id: str | None = None
    races: int = 0

    async def get(self, order_id: str) -> Order | None:
        found = await super().get(order_id)
        if order_id == self.order_id and self.races > 0:
            self.races -= 1
            moved = await super().get(order_id)
            assert moved is not None
            moved.stock_reserved(T0, DEADLINES)
            async with self.transaction("order") as tx:
                await tx.save_changed([moved])
        return found


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
    return order_service(store, numbers)


def emitted(store: InMemoryOrderStore) -> list[Event]:
    return [decode_data(envelope) for envelope in store.outbox]


async def placed(
    service: OrderService, *items: tuple[str, int], method: PaymentMethod = PaymentMethod.WECHAT_PAY
) -> Order:
    return (await place_order(service, command(*items, method=method))).order


async def awaiting_payment(service: OrderService, method: PaymentMethod = PaymentMethod.WECHAT_PAY) -> Order:
    order = await placed(service, method=method)
    await handle_batch(service, [delivery(reserved(order.order_id)), delivery(scored(order.order_id))])
    return await stored(service, order.order_id)


async def a_waiter(service: OrderService, order_id: str) -> asyncio.Task[None]:
    """A request waiting (up to 30 s) for `order_id` to change; it has begun waiting on return."""
    watch = ObservedWatch()
    service.watch = watch
    waiter = asyncio.create_task(watch.next_change(order_id, 30))
    await watch.waited(order_id)
    return waiter


async def woken(waiter: asyncio.Task[None]) -> bool:
    """Whether the waiter was woken well before its own 30 s timeout."""
    try:
        await asyncio.wait_for(waiter, 1)
    except TimeoutError:
        return False
    return True


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


async def test_a_replay_takes_no_order_number_reprices_nothing_and_emits_nothing(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    first = await place_order(service, command(("TEA", 1), key="k-1"))
    # Since the first request the product was repriced and then retired.
    repriced = ProductUpserted(sku="TEA", name="Longjing tea", merchant_id="m-1", price_fen=9900)
    retired = repriced.model_copy(update={"active": False})
    await handle_batch(service, [delivery(repriced), delivery(retired)])
    counters, outbox = dict(numbers.counters), list(store.outbox)

    replay = await place_order(service, command(("TEA", 1), key="k-1"))

    assert replay.created is False and replay.order.order_id == first.order.order_id
    assert replay.order.total_fen == 8800
    assert numbers.counters == counters == {"20261125": 1}
    assert store.outbox == outbox


async def test_concurrent_requests_with_one_key_make_one_order_and_all_answer_it(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    answers = await asyncio.gather(*(place_order(service, command(("TEA", 1), key="k-1")) for _ in range(5)))
    assert len({answer.order.order_id for answer in answers}) == 1
    assert [answer.created for answer in answers].count(True) == 1
    assert len(store.orders) == 1 and numbers.counters == {"20261125": 1}
    assert [type(e) for e in emitted(store)] == [OrderPlaced]


async def test_two_replicas_racing_with_one_key_make_one_order(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    other_replica = order_service(store, numbers, "sweeper-b")
    answers = await asyncio.gather(
        place_order(service, command(key="k-1")), place_order(other_replica, command(key="k-1"))
    )
    assert len({answer.order.order_id for answer in answers}) == 1
    assert sorted(answer.created for answer in answers) == [False, True]
    assert len(store.orders) == 1 and [type(e) for e in emitted(store)] == [OrderPlaced]


async def test_the_same_idempotency_key_with_another_body_is_refused_before_anything_is_taken(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    await place_order(service, command(("TEA", 1), key="k-1"))
    other_quantity = command(("TEA", 2), key="k-1")
    other_method = command(("TEA", 1), key="k-1", method=PaymentMethod.ALIPAY)
    for changed in (other_quantity, other_method):
        with pytest.raises(IdempotencyKeyReused):
            await place_order(service, changed)
    assert len(store.orders) == 1 and len(store.outbox) == 1
    assert numbers.counters == {"20261125": 1}


async def test_an_idempotency_key_belongs_to_its_customer(service: OrderService) -> None:
    mine = await place_order(service, command(key="k-1", customer_id="c-1"))
    theirs = await place_order(service, command(key="k-1", customer_id="c-2"))
    assert theirs.created and theirs.order.order_id != mine.order.order_id


async def test_unknown_and_inactive_skus_are_refused_by_position_and_nothing_is_placed(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    with pytest.raises(InvalidOrder) as refused:
        await place_order(service, command(("TEA", 1), ("NOPE", 1), ("OLD", 1)))
    assert [issue.field for issue in refused.value.issues] == ["items.1.sku", "items.2.sku"]
    assert "NOPE" in refused.value.issues[0].message and "OLD" in refused.value.issues[1].message
    assert store.orders == {} and store.outbox == [] and numbers.counters == {}


async def test_more_than_a_products_limit_across_lines_is_refused_on_each_line(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    with pytest.raises(InvalidOrder) as refused:
        await place_order(service, command(("PUER", PUER_LIMIT), ("TEA", 1), ("PUER", 1)))
    assert [issue.field for issue in refused.value.issues] == ["items.0.quantity", "items.2.quantity"]
    assert f"at most {PUER_LIMIT}" in refused.value.issues[0].message
    assert store.orders == {} and numbers.counters == {}
    assert (await placed(service, ("PUER", PUER_LIMIT))).status is OrderStatus.PENDING


async def test_a_payment_method_the_merchant_refuses_is_refused_once_its_terms_arrived(
    service: OrderService, store: InMemoryOrderStore, numbers: InMemoryOrderNumbers
) -> None:
    wechat_tea = command(("TEA", 1), ("CUP", 1), method=PaymentMethod.WECHAT_PAY)
    assert (await place_order(service, wechat_tea)).created, "a merchant with no terms yet accepts all"
    terms = MerchantUpserted(merchant_id="m-1", name="Tea house", payment_methods=[PaymentMethod.ALIPAY])
    await handle_batch(service, [delivery(terms)])
    counters = dict(numbers.counters)

    with pytest.raises(InvalidOrder) as refused:
        await place_order(service, wechat_tea)

    [issue] = refused.value.issues
    assert issue.field == "payment.method" and "m-1" in issue.message and "m-2" not in issue.message
    assert numbers.counters == counters and len(store.orders) == 1
    alipay = await place_order(service, command(("TEA", 1), ("CUP", 1), method=PaymentMethod.ALIPAY))
    assert alipay.created
    cup_only = await place_order(service, command(("CUP", 1), method=PaymentMethod.WECHAT_PAY))
    assert cup_only.created, "m-2 sent no terms and still accepts every method"


async def test_merchant_upserted_keeps_the_latest_terms_in_the_replica(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    first = MerchantUpserted(merchant_id="m-1", name="Tea house", payment_methods=[PaymentMethod.ALIPAY])
    later = first.model_copy(update={"payment_methods": [PaymentMethod.BANK_CARD, PaymentMethod.WECHAT_PAY]})
    await handle_batch(service, [delivery(first), delivery(later)])
    [terms] = (await store.merchant_terms(["m-1", "m-9"])).values()
    assert terms.payment_methods == {PaymentMethod.BANK_CARD, PaymentMethod.WECHAT_PAY}


async def test_reviewing_a_request_names_every_issue_at_its_position(service: OrderService) -> None:
    terms = MerchantUpserted(merchant_id="m-2", name="Pottery", payment_methods=[PaymentMethod.ALIPAY])
    await handle_batch(service, [delivery(terms)])
    issues = await review_request(
        service,
        [None, RequestedItem("NOPE", 1), RequestedItem("PUER", PUER_LIMIT + 1), RequestedItem("CUP", 1)],
        PaymentMethod.BANK_CARD,
    )
    assert [issue.field for issue in issues] == ["items.1.sku", "items.2.quantity", "payment.method"]
    assert await review_request(service, [RequestedItem("TEA", 1)], None) == []


async def test_a_taken_order_number_moves_the_sequence_past_the_stored_orders_and_places_the_order(
    service: OrderService, numbers: InMemoryOrderNumbers
) -> None:
    first = await placed(service)
    numbers.forget()  # Redis restarted without its counters; Mongo kept the orders
    second = await placed(service)
    assert (first.order_no, second.order_no) == ("20261125-000001", "20261125-000002")
    assert await stored(service, second.order_id) == second
    assert await numbers.next(T0) == "20261125-000003"


async def test_past_its_admission_limit_placing_an_order_is_refused_at_once(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    service.admission = Admission(limit=1)
    with service.admission.admit(), pytest.raises(Overloaded):
        await placed(service, ("TEA", 1))
    assert store.orders == {}, "a refused order leaves no trace"
    assert (await placed(service, ("TEA", 1))).status is OrderStatus.PENDING


# --- finding and cancelling ----------------------------------------------------------------


async def test_a_guest_order_is_found_by_its_number_and_the_contact_it_was_placed_with(
    service: OrderService,
) -> None:
    guest = (await place_order(service, command(customer_id="guest-1", contact=GUEST_CONTACT))).order
    customers = await placed(service)
    found = await find_by_contact(service, guest.order_no, GUEST_CONTACT)
    assert found is not None and found.order_id == guest.order_id
    assert await find_by_contact(service, guest.order_no, "email:someone.else@example.com") is None
    assert await find_by_contact(service, "20261125-000099", GUEST_CONTACT) is None
    assert await find_by_contact(service, customers.order_no, GUEST_CONTACT) is None, "no contact, no match"


async def test_cancelling_ends_the_order_as_customer_cancelled_once_and_wakes_its_waiters(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    waiter = await a_waiter(service, order.order_id)

    cancelled = await cancel_order(service, order.order_id)

    assert await woken(waiter)
    assert (cancelled.status, cancelled.reason) == (OrderStatus.CANCELLED, OrderEndReason.CUSTOMER_CANCELLED)
    assert await stored(service, order.order_id) == cancelled
    again = await cancel_order(service, order.order_id)
    assert again == cancelled
    ends = [e for e in emitted(store) if isinstance(e, OrderCancelled)]
    assert [(e.order_id, e.reason) for e in ends] == [(order.order_id, OrderEndReason.CUSTOMER_CANCELLED)]
    assert store.outbox[-1].correlation_id == order.correlation_id


async def test_a_confirmed_order_cannot_be_cancelled_and_stays_confirmed(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    await handle_batch(service, [delivery(authorized(order.order_id))])
    before = len(store.outbox)
    with pytest.raises(CannotCancel):
        await cancel_order(service, order.order_id)
    assert (await stored(service, order.order_id)).status is OrderStatus.CONFIRMED
    assert len(store.outbox) == before


async def test_cancelling_an_unknown_order_raises(service: OrderService) -> None:
    with pytest.raises(UnknownOrder):
        await cancel_order(service, "o-never-placed")


async def racing_store(numbers: InMemoryOrderNumbers) -> tuple[ChangedAfterRead, OrderService]:
    store = ChangedAfterRead()
    async with store.transaction("seed") as tx:
        await tx.upsert_catalog(CATALOG)
    return store, order_service(store, numbers)


async def test_a_cancel_racing_with_the_saga_decides_again_on_the_new_state(
    numbers: InMemoryOrderNumbers,
) -> None:
    store, service = await racing_store(numbers)
    order = await placed(service)
    store.order_id, store.races = order.order_id, 1

    cancelled = await cancel_order(service, order.order_id)

    assert [entry.cause for entry in cancelled.timeline] == [
        "order.placed",
        "inventory.stock_reserved",
        "customer.cancelled",
    ]
    assert (await stored(service, order.order_id)).reason is OrderEndReason.CUSTOMER_CANCELLED
    assert [type(e) for e in emitted(store)] == [OrderPlaced, OrderCancelled]


async def test_a_cancel_that_keeps_losing_races_gives_up_with_concurrent_update_and_changes_nothing(
    numbers: InMemoryOrderNumbers,
) -> None:
    store, service = await racing_store(numbers)
    order = await placed(service)
    store.order_id, store.races = order.order_id, 3

    with pytest.raises(ConcurrentUpdate):
        await cancel_order(service, order.order_id)

    assert store.races == 0, "three attempts"
    assert (await stored(service, order.order_id)).status is OrderStatus.PENDING
    assert [type(e) for e in emitted(store)] == [OrderPlaced]


# --- consumed batches ----------------------------------------------------------------------


async def test_stock_reserved_and_fraud_approved_request_payment_once(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    approval = delivery(scored(order.order_id), correlation_id="corr-7")
    await handle_batch(service, [delivery(reserved(order.order_id)), approval])
    after = await stored(service, order.order_id)
    assert after.status is OrderStatus.AWAITING_PAYMENT
    assert after.deadline_at == T0 + DEADLINES.payment
    requests = [e for e in emitted(store) if isinstance(e, PaymentRequested)]
    assert [(r.order_id, r.amount_fen) for r in requests] == [(order.order_id, 8800)]
    reply = store.outbox[-1]
    assert (reply.causation_id, reply.correlation_id) == (approval.envelope.id, "corr-7")


async def test_rejected_stock_rejects_the_order_as_out_of_stock_with_counts_kept_internal(
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
    last = after.timeline[-1]
    assert "TEA (asked 1, 0 left)" in last.detail
    assert "Longjing tea" in last.note and "left" not in last.note


async def test_an_order_placed_asks_inventory_to_hold_its_stock_as_long_as_it_may_be_paid(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service)
    [announced] = emitted(store)
    assert isinstance(announced, OrderPlaced)
    assert announced.hold_until == order.placed_at + DEADLINES.checks + DEADLINES.review + DEADLINES.payment


async def test_a_reservation_lost_after_payment_cancels_the_confirmed_order_for_a_full_refund(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    await handle_batch(service, [delivery(authorized(order.order_id))])
    short = Shortage(sku="TEA", quantity=1, available=0)
    lost = StockRejected(
        order_id=order.order_id, reason=StockRejectReason.RESERVATION_LOST, shortages=[short]
    )

    await handle_batch(service, [delivery(lost)])
    await handle_batch(service, [delivery(lost)])  # told again, under another envelope

    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, OrderEndReason.RESERVATION_LOST)
    cancellations = [e for e in emitted(store) if isinstance(e, OrderCancelled)]
    assert [(e.order_id, e.reason) for e in cancellations] == [
        (order.order_id, OrderEndReason.RESERVATION_LOST)
    ]
    assert "TEA (asked 1, 0 left)" in cancellations[0].detail
    note = after.timeline[-1].note
    assert "Longjing tea sold out" in note and "refunded in full" in note and "left" not in note


async def test_an_out_of_stock_answer_arriving_after_confirmation_changes_nothing(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    await handle_batch(service, [delivery(authorized(order.order_id))])
    outbox = len(store.outbox)

    await handle_batch(service, [delivery(StockRejected(order_id=order.order_id))])

    assert (await stored(service, order.order_id)).status is OrderStatus.CONFIRMED
    assert len(store.outbox) == outbox


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


async def test_a_card_token_is_stored_sealed_for_payment_and_dropped_once_payment_is_requested(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await placed(service, method=PaymentMethod.BANK_CARD)
    kept = (await stored(service, order.order_id)).payment_token
    assert kept is not None and CLEAR_TOKEN not in kept
    assert TOKEN_OPENER.open(kept) == CLEAR_TOKEN
    assert CLEAR_TOKEN not in store.outbox[0].model_dump_json(), "OrderPlaced carries no token"
    await handle_batch(service, [delivery(reserved(order.order_id)), delivery(scored(order.order_id))])
    [requested] = [e for e in emitted(store) if isinstance(e, PaymentRequested)]
    assert requested.sealed_token is not None and TOKEN_OPENER.open(requested.sealed_token) == CLEAR_TOKEN
    assert (await stored(service, order.order_id)).payment_token is None


async def test_a_wallet_order_is_stored_and_requests_payment_without_a_token(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service, PaymentMethod.ALIPAY)
    assert order.payment_token is None and order.payment_status is PaymentStatus.REQUESTED
    [requested] = [e for e in emitted(store) if isinstance(e, PaymentRequested)]
    assert requested.sealed_token is None


async def test_a_pending_wallet_payment_is_stored_with_what_the_payer_does(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    sent = len(store.outbox)
    pending = PaymentPending(
        order_id=order.order_id,
        payment_id="pay-1",
        method=PaymentMethod.WECHAT_PAY,
        amount_fen=8800,
        action_type=PayActionType.QR,
        action_url="https://pay.example/qr/1",
    )
    await handle_batch(service, [delivery(pending)])
    after = await stored(service, order.order_id)
    assert (after.status, after.payment_status, after.pay_action, after.payment_id) == (
        OrderStatus.AWAITING_PAYMENT,
        PaymentStatus.PENDING,
        PayAction(PayActionType.QR, "https://pay.example/qr/1"),
        "pay-1",
    )
    assert after.timeline[-1].note == "Scan the QR code with WeChat Pay to pay ¥88.00."
    assert len(store.outbox) == sent, "nothing to tell the other services"


async def test_a_provider_timeout_cancels_the_order_with_provider_timeout(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    failed = PaymentFailed(
        order_id=order.order_id,
        payment_id="pay-1",
        method=PaymentMethod.WECHAT_PAY,
        reason=DeclineReason.PROVIDER_TIMEOUT,
        detail="no answer in 30 s",
    )
    await handle_batch(service, [delivery(failed)])
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, OrderEndReason.PROVIDER_TIMEOUT)
    cancelled = emitted(store)[-1]
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.reason, cancelled.detail) == (
        OrderEndReason.PROVIDER_TIMEOUT,
        "PROVIDER_TIMEOUT: no answer in 30 s",
    )


async def test_a_capture_and_a_requested_refund_are_stored_in_the_payment_view(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    order = await awaiting_payment(service)
    await handle_batch(service, [delivery(authorized(order.order_id))])
    captured = PaymentCaptured(order_id=order.order_id, payment_id="pay-1", amount_fen=8800)
    refunded = PaymentRefunded(
        order_id=order.order_id,
        payment_id="pay-1",
        refund_id="rf-1",
        customer_id="c-1",
        amount_fen=800,
        refunded_total_fen=800,
        captured_fen=8800,
        reason=RefundReason.REQUESTED,
    )
    sent = len(store.outbox)
    await handle_batch(service, [delivery(captured), delivery(refunded)])
    after = await stored(service, order.order_id)
    assert (after.status, after.payment_status, after.refunded_fen) == (
        OrderStatus.CONFIRMED,
        PaymentStatus.CAPTURED,
        800,
    )
    assert [e.cause for e in after.timeline[-2:]] == ["payment.captured", "payment.refunded"]
    assert len(store.outbox) == sent


@pytest.mark.parametrize(
    "late_event",
    [
        lambda order_id: PaymentVoided(
            order_id=order_id,
            payment_id="pay-1",
            amount_fen=8800,
            reason=OrderEndReason.PAYMENT_TIMEOUT,
            customer_id="c-1",
            late=True,
        ),
        lambda order_id: PaymentRefunded(
            order_id=order_id,
            payment_id="pay-1",
            refund_id="rf-late",
            customer_id="c-1",
            amount_fen=8800,
            refunded_total_fen=8800,
            captured_fen=8800,
            reason=RefundReason.LATE_PAYMENT,
        ),
    ],
)
async def test_a_late_payment_given_back_is_told_on_the_cancelled_order_which_stays_cancelled(
    service: OrderService, store: InMemoryOrderStore, late_event: Callable[[str], Event]
) -> None:
    order = await awaiting_payment(service)
    clock_of(service).now = T0 + DEADLINES.payment
    assert await enforce_deadlines(service) == 1
    sent = len(store.outbox)
    await handle_batch(service, [delivery(late_event(order.order_id))])
    after = await stored(service, order.order_id)
    assert (after.status, after.reason) == (OrderStatus.CANCELLED, OrderEndReason.PAYMENT_TIMEOUT)
    assert "arrived after your order was cancelled" in after.timeline[-1].note
    assert "¥88.00" in after.timeline[-1].note
    assert len(store.outbox) == sent


async def test_a_batch_that_changes_an_order_wakes_its_waiters(service: OrderService) -> None:
    order = await placed(service)
    waiter = await a_waiter(service, order.order_id)
    await handle_batch(service, [delivery(reserved(order.order_id))])
    assert await woken(waiter)


async def test_a_redelivered_event_is_applied_once(service: OrderService, store: InMemoryOrderStore) -> None:
    order = await placed(service)
    reservation, approval = delivery(reserved(order.order_id)), delivery(scored(order.order_id))
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
    new = ProductUpserted(sku="POT", name="Clay pot", merchant_id="m-1", price_fen=20000, max_per_order=3)
    await handle_batch(service, [delivery(repriced), delivery(retired), delivery(new)])
    listed = {item.sku: (item.price_fen, item.max_per_order) for item in await service.store.catalog_page(10)}
    assert listed == {"POT": (20000, 3), "PUER": (12800, PUER_LIMIT), "TEA": (9900, 999)}
    assert (await placed(service, ("TEA", 1), ("POT", 1))).total_fen == 9900 + 20000
    with pytest.raises(InvalidOrder):
        await placed(service, ("CUP", 1))
    with pytest.raises(InvalidOrder):
        await placed(service, ("POT", 4))


async def test_the_replica_keeps_a_products_price_tiers_and_prices_orders_by_them(
    service: OrderService,
) -> None:
    tiers = [PriceTier(min_quantity=3, unit_price_fen=900), PriceTier(min_quantity=10, unit_price_fen=800)]
    tiered = ProductUpserted(sku="TIN", name="Tea tin", merchant_id="m-1", price_fen=1000, price_tiers=tiers)
    await handle_batch(service, [delivery(tiered)])

    [kept] = (await service.store.catalog_items(["TIN"])).values()
    assert kept.price_tiers == tuple(tiers)
    assert (await placed(service, ("TIN", 2))).total_fen == 2000
    assert (await placed(service, ("TIN", 3))).total_fen == 2700
    assert (await placed(service, ("TIN", 10))).total_fen == 8000

    untiered = ProductUpserted(sku="TIN", name="Tea tin", merchant_id="m-1", price_fen=1000)
    await handle_batch(service, [delivery(untiered)])
    assert (await placed(service, ("TIN", 10))).total_fen == 10000, "a later upsert without tiers drops them"


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


async def test_an_order_ended_by_its_deadline_wakes_its_waiters(service: OrderService) -> None:
    order = await placed(service)
    waiter = await a_waiter(service, order.order_id)
    clock_of(service).now = T0 + DEADLINES.checks
    assert await enforce_deadlines(service) == 1
    assert await woken(waiter)


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
    service = order_service(store, numbers)
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
    other = order_service(store, numbers, "sweeper-b")
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
    other = order_service(store, numbers, "sweeper-b")
    order = await placed(service)
    now = T0 + DEADLINES.checks
    await store.claim_overdue(now, 10, service.sweeper_id, LEASE)  # then sweeper A died
    clock_of(other).now = now + LEASE - timedelta(seconds=1)
    assert await enforce_deadlines(other) == 0
    clock_of(other).now = now + LEASE
    assert await enforce_deadlines(other) == 1
    assert (await stored(other, order.order_id)).reason is OrderEndReason.STOCK_TIMEOUT


async def test_a_suspended_merchants_product_is_refused_with_the_reason_and_reinstatement_lifts_it(
    service: OrderService, store: InMemoryOrderStore
) -> None:
    suspended = MerchantUpserted(
        merchant_id="m-1",
        name="Tea house",
        payment_methods=list(PaymentMethod),
        status=MerchantStatus.SUSPENDED,
        reason="counterfeit tea",
    )
    await handle_batch(service, [delivery(suspended)])

    with pytest.raises(InvalidOrder) as refused:
        await place_order(service, command(("TEA", 1)))

    [issue] = refused.value.issues
    assert (issue.field, issue.message) == (
        "items.0.sku",
        "TEA cannot be ordered: merchant m-1 is suspended: counterfeit tea",
    )
    assert store.orders == {}
    reinstated = suspended.model_copy(update={"status": MerchantStatus.APPROVED, "reason": ""})
    await handle_batch(service, [delivery(reinstated)])
    assert (await place_order(service, command(("TEA", 1)))).created

"""The order events and the operations they queue, over the twin store and a scripted provider:
money moves once however often a fact arrives, and no provider trouble reaches the consumer."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from services.payment.adapters import ProviderRejected
from services.payment.domain import OperationKind, PaymentStatus, RefundRefused, auto_refund_id
from services.payment.handlers import SERVICE, UnsupportedMethod, handle_batch, reconcile
from services.payment.providers import Outcome, ProviderAnswer
from services.payment.store import ConcurrentUpdate
from services.payment.worker import run_operation
from shared.contracts import (
    DeclineReason,
    OrderCancelled,
    OrderConfirmed,
    OrderEndReason,
    OrderLine,
    OrderRejected,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentVoided,
    RefundReason,
    RefundRequested,
)
from tests.unit.payment.fakes import (
    CALLBACK_BASE,
    LEASE,
    PROVIDER_TOKEN,
    SEALER,
    World,
    card_request,
    make_world,
    pay,
    types,
    unavailable,
    until,
    wallet_request,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> World:
    return make_world()


def confirmed(order_id: str = "ord-1") -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        order_no="20261125-000001",
        customer_id="cus-1",
        lines=[OrderLine(sku="sku-1", merchant_id="m-1", name="Tea", quantity=1, unit_price_fen=9_900)],
        total_fen=9_900,
        payment_id=pay(order_id),
    )


def cancelled(
    order_id: str = "ord-1", reason: OrderEndReason = OrderEndReason.CUSTOMER_CANCELLED
) -> OrderCancelled:
    return OrderCancelled(order_id=order_id, order_no="20261125-000001", customer_id="cus-1", reason=reason)


def refund(refund_id: str = "rf-1", amount_fen: int = 1_000) -> RefundRequested:
    return RefundRequested(
        order_id="ord-1", refund_id=refund_id, customer_id="cus-1", amount_fen=amount_fen, reason="broken"
    )


async def captured(world: World) -> None:
    await world.handle(card_request())
    await world.drain()
    await world.handle(confirmed())
    await world.drain()


# --- the consumer stores, the worker calls ------------------------------------------------------


async def test_the_consumer_queues_the_authorization_and_calls_no_provider(world: World) -> None:
    world.service.wake.clear()

    out = await world.handle(card_request())

    assert out == []
    assert world.card.calls == []
    [authorize] = world.queued()
    assert (authorize.kind, authorize.key) == (OperationKind.AUTHORIZE, pay())
    assert authorize.sealed_token is not None and PROVIDER_TOKEN not in authorize.sealed_token
    assert world.store.payments[pay()].status is PaymentStatus.REQUESTED
    assert world.service.wake.is_set(), "the worker is woken at once"


async def test_the_worker_authorizes_with_the_opened_token_and_forgets_the_sealed_one(world: World) -> None:
    request = world.deliver(card_request())
    await handle_batch(world.service, [request])

    out = await world.drain()

    [call] = world.card.calls
    assert (call.operation, call.key, call.token, call.amount_fen) == (
        "authorize",
        pay(),
        PROVIDER_TOKEN,
        9_900,
    )
    assert call.notify_url == f"{CALLBACK_BASE}/v1/payments/callbacks/bank_card"
    [authorized] = out
    assert authorized.type == PaymentAuthorized.TYPE
    assert (authorized.data["provider_ref"], authorized.correlation_id, authorized.subject) == (
        f"ref-{pay()}",
        "corr-ord-1",
        "ord-1",
    )
    assert world.queued() == [], "the operation, and the sealed token in it, are gone"
    assert world.store.payments[pay()].status is PaymentStatus.AUTHORIZED


async def test_a_request_delivered_three_times_authorizes_once_and_is_announced_once(world: World) -> None:
    first = world.deliver(card_request())
    resent = world.deliver(card_request())  # the order service sent it again: a new envelope

    await handle_batch(world.service, [first, resent])
    await handle_batch(world.service, [first])  # redelivered after a rebalance
    await world.drain()
    await handle_batch(world.service, [world.deliver(card_request())])
    await world.drain()

    assert world.card.made("authorize") == [pay()]
    assert types(world.store.outbox) == [PaymentAuthorized.TYPE]


@pytest.mark.parametrize(
    "sealed",
    [PROVIDER_TOKEN, "4111 1111 1111 1111", SEALER.seal("4111111111111111"), "x25519.other-key.AAAA"],
    ids=["v1-clear-token", "card-number", "sealed-card-number", "not-ours"],
)
async def test_a_token_that_cannot_be_used_fails_the_payment_without_the_provider(
    world: World, sealed: str
) -> None:
    [failed] = await world.handle(card_request(sealed=sealed))

    assert failed.type == PaymentFailed.TYPE
    assert failed.data["reason"] == DeclineReason.INVALID_TOKEN
    assert "4111" not in failed.data["detail"] and PROVIDER_TOKEN not in failed.data["detail"]
    assert world.queued() == []
    await world.drain()
    assert world.card.calls == []


async def test_a_wallet_payment_waits_for_the_payer_with_the_pay_action(world: World) -> None:
    await world.handle(wallet_request())

    [pending] = await world.drain()

    assert pending.type == PaymentPending.TYPE
    assert (pending.data["action_type"], pending.data["action_url"]) == (
        "qr",
        f"https://pay.example/qr/{pay()}",
    )
    [call] = world.alipay.calls
    assert call.token is None
    assert call.notify_url == f"{CALLBACK_BASE}/v1/payments/callbacks/alipay"


# --- provider trouble ------------------------------------------------------------------------------


async def test_an_unavailable_provider_is_retried_with_backoff_then_answers(world: World) -> None:
    world.card.script["authorize"] = [unavailable(), unavailable()]
    await world.handle(card_request())

    assert await world.drain() == []
    [waiting] = world.queued()
    assert (waiting.attempts, waiting.claim, waiting.due_at) == (
        1,
        None,
        world.clock() + timedelta(seconds=0.375),
    )
    assert "no answer" in waiting.last_error
    world.clock.advance(timedelta(seconds=1))
    assert await world.drain() == []
    world.clock.advance(timedelta(seconds=1))
    out = await world.drain()

    assert world.card.made("authorize") == [pay()] * 3, "one idempotency key for every try"
    assert types(out) == [PaymentAuthorized.TYPE]
    assert world.queued() == []


async def test_no_answer_within_the_deadline_fails_with_provider_timeout_and_voids(world: World) -> None:
    world.card.script["authorize"] = [unavailable() for _ in range(100)]
    await world.handle(card_request())
    out = []
    for _ in range(40):
        out += await world.drain()
        world.clock.advance(timedelta(seconds=5))

    assert types(out) == [PaymentFailed.TYPE]
    assert out[0].data["reason"] == DeclineReason.PROVIDER_TIMEOUT
    assert world.card.made("void") == [f"{pay()}:void"], "whatever the provider held late is released"
    assert world.queued() == []
    payment = world.store.payments[pay()]
    assert payment.status is PaymentStatus.FAILED


async def test_a_void_is_retried_past_any_deadline_until_it_passes(world: World) -> None:
    await world.handle(card_request())
    await world.drain()
    world.card.script["void"] = [unavailable() for _ in range(12)]
    await world.handle(cancelled())
    out = []
    for _ in range(13):
        out += await world.drain()
        world.clock.advance(timedelta(seconds=61))

    assert len(world.card.made("void")) == 13
    assert types(out) == [PaymentVoided.TYPE]


async def test_a_request_the_provider_rejects_fails_the_payment_without_retrying(world: World) -> None:
    world.card.script["authorize"] = [
        ProviderRejected(PaymentMethod.BANK_CARD, "authorize", 400, "KEY_REUSED", "another amount")
    ]
    await world.handle(card_request())

    [failed] = await world.drain()

    assert (failed.type, failed.data["reason"]) == (PaymentFailed.TYPE, DeclineReason.PROVIDER_DECLINED)
    assert "KEY_REUSED" in failed.data["detail"]
    assert world.queued() == []


async def test_a_worker_killed_after_the_call_and_before_the_store_is_retried_with_the_same_key(
    world: World,
) -> None:
    await world.handle(card_request())
    [claimed] = await world.store.claim_operations(world.clock(), "worker-a", LEASE, limit=10)
    real_transaction = world.store.transaction

    def killed(consumer: str) -> object:
        raise SystemExit("killed")  # the process dies between the provider's answer and the write

    world.store.transaction = killed  # type: ignore[method-assign,assignment]
    with pytest.raises(SystemExit):
        await run_operation(world.service, claimed)
    world.store.transaction = real_transaction  # type: ignore[method-assign]
    assert world.store.payments[pay()].status is PaymentStatus.REQUESTED

    assert await world.drain("worker-b") == [], "the dead worker's claim holds until its lease ends"
    world.clock.advance(LEASE)
    out = await world.drain("worker-b")

    assert world.card.made("authorize") == [pay(), pay()]
    assert types(out) == [PaymentAuthorized.TYPE]
    assert world.queued() == []


async def test_a_concurrent_change_is_met_by_deciding_again_on_the_fresh_payment(world: World) -> None:
    await world.handle(card_request())
    [claimed] = await world.store.claim_operations(world.clock(), "worker", LEASE, limit=10)
    real_get = world.store.get
    raced = False

    async def get_then_race(payment_id: str) -> object:
        nonlocal raced
        read = await real_get(payment_id)
        if not raced and read is not None:
            raced = True  # another writer stores a change right after this read
            stored = world.store.payments[payment_id]
            world.store.payments[payment_id] = replace(stored, version=stored.version + 1)
        return read

    world.store.get = get_then_race  # type: ignore[method-assign,assignment]

    await run_operation(world.service, claimed)

    assert raced
    assert world.store.payments[pay()].status is PaymentStatus.AUTHORIZED
    assert world.store.payments[pay()].version == 3
    assert types(world.store.outbox) == [PaymentAuthorized.TYPE]


async def test_a_change_that_keeps_losing_races_goes_up_and_leaves_the_operation_claimed(
    world: World,
) -> None:
    await world.handle(card_request())
    [claimed] = await world.store.claim_operations(world.clock(), "worker", LEASE, limit=10)
    real_get = world.store.get

    async def always_raced(payment_id: str) -> object:
        read = await real_get(payment_id)
        stored = world.store.payments[payment_id]
        world.store.payments[payment_id] = replace(stored, version=stored.version + 1)
        return read

    world.store.get = always_raced  # type: ignore[method-assign,assignment]

    with pytest.raises(ConcurrentUpdate):
        await run_operation(world.service, claimed)

    assert world.queued()[0].claim == claimed.claim
    assert world.store.outbox == []


# --- confirmation, cancellation, refunds -----------------------------------------------------------


async def test_a_claimed_authorization_whose_order_ended_is_dropped_without_a_call(world: World) -> None:
    await world.handle(card_request())
    [claimed] = await world.store.claim_operations(world.clock(), "worker", LEASE, limit=10)
    await world.handle(cancelled(reason=OrderEndReason.PAYMENT_TIMEOUT))

    await run_operation(world.service, claimed)
    await world.drain()

    assert world.card.made("authorize") == []
    assert world.card.made("void") == [f"{pay()}:void"]


async def test_a_confirmed_card_payment_is_captured_once(world: World) -> None:
    await world.handle(card_request())
    await world.drain()

    await world.handle(confirmed())
    await world.handle(confirmed())  # a resend
    out = await world.drain()

    assert world.card.made("capture") == [f"{pay()}:capture"]
    assert types(out) == [PaymentCaptured.TYPE]
    payment = world.store.payments[pay()]
    assert (payment.status, payment.captured_fen) == (PaymentStatus.CAPTURED, 9_900)


async def test_cancelling_an_authorized_payment_voids_it(world: World) -> None:
    await world.handle(card_request())
    await world.drain()

    assert await world.handle(cancelled()) == []
    out = await world.drain()

    assert world.card.made("void") == [f"{pay()}:void"]
    [voided] = out
    assert voided.type == PaymentVoided.TYPE
    assert (voided.data["reason"], voided.data["customer_id"], voided.data["late"]) == (
        "CUSTOMER_CANCELLED",
        "cus-1",
        False,
    )


async def test_cancelling_while_the_authorization_is_in_flight_drops_its_answer_and_voids(
    world: World,
) -> None:
    await world.handle(card_request())
    [claimed] = await world.store.claim_operations(world.clock(), "worker", LEASE, limit=10)
    world.card.gate = asyncio.Event()
    call = asyncio.create_task(run_operation(world.service, claimed))
    await until(lambda: world.card.in_flight == 1)
    await world.handle(cancelled(reason=OrderEndReason.PAYMENT_TIMEOUT))

    world.card.gate.set()  # the provider authorized; the answer comes after the cancellation
    await call
    out = await world.drain()

    assert world.card.made("authorize") == [pay()]
    assert world.card.made("void") == [f"{pay()}:void"]
    assert out == [], "the order never heard of an authorization, so no void is announced"
    assert world.store.payments[pay()].status is PaymentStatus.VOIDED


async def test_cancelling_a_captured_payment_refunds_it(world: World) -> None:
    await captured(world)

    await world.handle(cancelled())
    [refunded] = await world.drain()

    assert world.card.made("refund") == [auto_refund_id(pay())]
    assert refunded.type == PaymentRefunded.TYPE
    assert (refunded.data["reason"], refunded.data["amount_fen"]) == (RefundReason.ORDER_ENDED, 9_900)


async def test_a_void_that_finds_the_money_taken_turns_into_a_refund(world: World) -> None:
    await world.handle(card_request())
    await world.drain()
    world.card.script["void"] = [
        ProviderAnswer(Outcome.CAPTURED, provider_ref=f"ref-{pay()}", amount_fen=9_900)
    ]

    await world.handle(cancelled())
    out = await world.drain()

    assert world.card.made("refund") == [auto_refund_id(pay())]
    assert types(out) == [PaymentRefunded.TYPE]


async def test_partial_refunds_add_up_and_a_repeated_refund_id_refunds_once(world: World) -> None:
    await captured(world)

    await world.handle(refund("rf-1", 4_000))
    await world.handle(refund("rf-1", 4_000))
    await world.handle(refund("rf-2", 5_900))
    out = await world.drain()

    assert sorted(world.card.made("refund")) == ["rf-1", "rf-2"]
    assert sorted(e.data["refunded_total_fen"] for e in out) == [4_000, 9_900]
    payment = world.store.payments[pay()]
    assert (payment.status, payment.refunded_fen) == (PaymentStatus.REFUNDED, 9_900)


async def test_a_refund_beyond_what_is_left_is_refused_and_changes_nothing(world: World) -> None:
    await captured(world)
    await world.handle(refund("rf-1", 9_000))
    before = (world.store.payments[pay()], len(world.store.outbox), world.queued())
    too_much = world.deliver(refund("rf-2", 1_000))

    with pytest.raises(RefundRefused, match="asks 1000 fen .* has 900 fen left"):
        await handle_batch(world.service, [too_much])

    assert (world.store.payments[pay()], len(world.store.outbox), world.queued()) == before
    assert f"{SERVICE}:{too_much.envelope.id}" not in world.store.ledger.processed


async def test_a_refund_for_an_order_without_payment_is_refused(world: World) -> None:
    with pytest.raises(RefundRefused, match="no payment"):
        await world.handle(refund())


async def test_a_refund_asked_before_the_capture_answered_waits_for_it(world: World) -> None:
    await world.handle(card_request())
    await world.drain()
    world.card.script["capture"] = [unavailable()]
    await world.handle(confirmed())
    await world.handle(refund("rf-1", 9_900))

    await world.drain()
    assert world.card.made("refund") == [], "no refund before the money is taken"
    world.clock.advance(timedelta(seconds=2))
    out = await world.drain()

    assert world.card.made("capture") == [f"{pay()}:capture"] * 2
    assert world.card.made("refund") == ["rf-1"]
    assert types(out) == [PaymentCaptured.TYPE, PaymentRefunded.TYPE]


# --- the rest ---------------------------------------------------------------------------------------


async def test_a_method_without_adapter_is_refused_before_anything_is_stored(world: World) -> None:
    world.service.providers = {}

    with pytest.raises(UnsupportedMethod):
        await world.handle(card_request())

    assert world.store.payments == {}


async def test_other_order_events_are_passed_over_without_a_write(world: World) -> None:
    rejected = OrderRejected(order_id="ord-1", order_no="n", customer_id="cus-1", reason=OrderEndReason.FRAUD)

    assert await world.handle(rejected) == []
    assert world.store.ledger.processed == set(), "an event that changes nothing is not recorded"


async def test_a_confirmation_of_an_order_without_payment_changes_nothing(world: World) -> None:
    assert await world.handle(confirmed()) == []
    assert world.queued() == []


# --- reconciliation ---------------------------------------------------------------------------------


async def test_reconciliation_applies_what_the_provider_says_of_payments_left_waiting(world: World) -> None:
    await world.handle(
        wallet_request("ord-paid"), wallet_request("ord-declined"), wallet_request("ord-waiting")
    )
    await world.drain()
    world.clock.advance(timedelta(seconds=61))
    await world.handle(wallet_request("ord-fresh"))
    await world.drain()
    world.alipay.script["query"] = [
        ProviderAnswer(Outcome.CAPTURED, provider_ref="ref-paid", amount_fen=9_900),
        ProviderAnswer(Outcome.DECLINED, decline_code="PAYER_DECLINED"),
        ProviderAnswer(Outcome.PENDING),
    ]
    before = len(world.store.outbox)

    changed = await reconcile(world.service, after=timedelta(seconds=60))

    assert changed == 2
    assert sorted(world.alipay.made("query")) == sorted(
        [pay("ord-paid"), pay("ord-declined"), pay("ord-waiting")]
    )
    statuses = {
        order: world.store.payments[pay(order)].status
        for order in ("ord-paid", "ord-declined", "ord-waiting")
    }
    assert statuses == {
        "ord-paid": PaymentStatus.CAPTURED,
        "ord-declined": PaymentStatus.FAILED,
        "ord-waiting": PaymentStatus.PENDING,
    }
    new = world.store.outbox[before:]
    assert sorted(types(new)) == sorted([PaymentAuthorized.TYPE, PaymentCaptured.TYPE, PaymentFailed.TYPE])


async def test_reconciliation_leaves_a_payment_the_provider_cannot_answer_for(world: World) -> None:
    await world.handle(wallet_request())
    await world.drain()
    world.clock.advance(timedelta(seconds=61))
    world.alipay.script["query"] = [unavailable()]

    assert await reconcile(world.service, after=timedelta(seconds=60)) == 0
    assert world.store.payments[pay()].status is PaymentStatus.PENDING


async def test_a_method_that_needs_no_token_ignores_one_sent_anyway(world: World) -> None:
    request = wallet_request(method=PaymentMethod.WECHAT_PAY).model_copy(
        update={"sealed_token": "4111111111111111"}
    )

    await world.handle(request)

    assert world.queued()[0].sealed_token is None

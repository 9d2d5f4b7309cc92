"""The payment store's contract: what the handlers and the worker rely on, held of the in-memory twin
and of Mongo."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from services.payment.domain import (
    Notice,
    Operation,
    OperationKind,
    Outcome,
    PayAction,
    Payment,
    PaymentStatus,
    ProviderReply,
)
from services.payment.store import (
    NONCES,
    OPERATIONS,
    PAYMENTS,
    CallbackReplayed,
    ClaimLost,
    ConcurrentUpdate,
    MongoPaymentStore,
    PaymentStore,
)
from shared.contracts import (
    Envelope,
    Event,
    OrderEndReason,
    PayActionType,
    PaymentMethod,
    PaymentRequested,
    RefundReason,
    RefundRequested,
)
from shared.crypto import PersonalData
from shared.errors import ConcurrentWrite
from shared.kafka import decode, new_envelope
from shared.mongo import OUTBOX, MongoStore
from tests.twins.payment import InMemoryPaymentStore
from tests.unit.samples import delivery

CONSUMER = "payment"
# Whole seconds: MongoDB keeps datetimes to the millisecond.
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
LEASE = timedelta(seconds=30)
PERSONAL = PersonalData(SecretStr("t1:dGVzdC1vbmx5LXBheW1lbnQtc3RvcmUta2V5LTAxMjM"))
SEALED_TOKEN = "x25519.kid.sealed-for-payment"  # noqa: S105 - opaque test value


def requested(order_id: str, method: PaymentMethod = PaymentMethod.BANK_CARD) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id, customer_id="cus-1", amount_fen=9_900, method=method, sealed_token=SEALED_TOKEN
    )


def new_payment(
    order_id: str = "ord-1", method: PaymentMethod = PaymentMethod.BANK_CARD
) -> tuple[Payment, Operation]:
    payment, decision = Payment.request(
        requested(order_id, method),
        correlation_id=f"corr-{order_id}",
        now=NOW,
        deadline=timedelta(seconds=30),
        token_problem=None,
    )
    [authorize] = decision.operations
    return payment, authorize


def authorized(order_id: str = "ord-1") -> tuple[Payment, Event]:
    payment, authorize = new_payment(order_id)
    decision = payment.answered(
        authorize, ProviderReply(Outcome.AUTHORIZED, provider_ref=f"ref-{order_id}"), NOW
    )
    return payment, decision.events[0]


def declined(order_id: str) -> tuple[Payment, Event]:
    payment, authorize = new_payment(order_id)
    decision = payment.answered(authorize, ProviderReply(Outcome.DECLINED, decline_code="CARD_DECLINED"), NOW)
    return payment, decision.events[0]


def pending(order_id: str, at: datetime) -> Payment:
    payment, authorize = new_payment(order_id, PaymentMethod.ALIPAY)
    action = PayAction(PayActionType.REDIRECT, f"https://pay.example/{order_id}")
    payment.answered(
        authorize, ProviderReply(Outcome.PENDING, provider_ref=f"ref-{order_id}", action=action), at
    )
    return payment


def operation(key: str, due_at: datetime = NOW, **changes: Any) -> Operation:
    base = Operation(
        key=key,
        kind=OperationKind.VOID,
        payment_id=key.split(":")[0],
        method=PaymentMethod.BANK_CARD,
        due_at=due_at,
    )
    return replace(base, **changes)


def envelope_of(event: Event) -> Envelope:
    return new_envelope(event, source=CONSUMER, correlation_id="corr")


async def store_new(
    store: PaymentStore, *payments: Payment, operations: list[Operation] | None = None
) -> None:
    async with store.transaction(CONSUMER) as tx:
        await tx.save(new=list(payments), changed=[])
        await tx.add_operations(operations or [])


class PaymentStoreContract:
    """Subclasses provide the `store` fixture and read the outbox their way."""

    async def outbox_ids(self, store: PaymentStore) -> list[str]:
        raise NotImplementedError

    # --- payments ------------------------------------------------------------------------------

    async def test_new_payments_are_stored_at_version_1_and_found_by_order_and_by_id(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        other, _ = declined("ord-2")

        await store_new(store, payment, other)

        found = await store.for_orders(["ord-1", "ord-2", "ord-unknown", "ord-1"])
        assert found == {"ord-1": replace(payment, version=1), "ord-2": replace(other, version=1)}
        assert await store.get(payment.payment_id) == replace(payment, version=1)
        assert await store.get("pay_unknown") is None
        assert await store.for_orders([]) == {}
        assert payment.version == 0, "the store reports versions through reads, not on what it was given"

    async def test_every_field_of_a_payment_comes_back_as_it_was_stored(self, store: PaymentStore) -> None:
        payment, _ = authorized("ord-1")
        payment.confirm(NOW)
        payment.answered(operation("x", kind=OperationKind.CAPTURE), ProviderReply(Outcome.CAPTURED), NOW)
        refund = RefundRequested(
            order_id="ord-1", refund_id="rf-1", customer_id="cus-1", amount_fen=100, reason="scratched"
        )
        [refund_op] = payment.request_refund(refund, LATER).operations
        payment.answered(refund_op, ProviderReply(Outcome.REFUNDED), LATER)
        payment.request_refund(refund.model_copy(update={"refund_id": "rf-2", "amount_fen": 200}), LATER)
        payment.cancel(OrderEndReason.CUSTOMER_CANCELLED, LATER)
        payment.notice(Notice(Outcome.CAPTURED, 9_900, "ref-ord-1", notification_id="n-1"), LATER)
        assert payment.refunds and payment.order_ended and payment.refunded_fen == 100

        waiting = pending("ord-2", NOW)
        failed, _ = declined("ord-3")
        voided, _ = authorized("ord-4")
        voided.cancel(OrderEndReason.PAYMENT_TIMEOUT, LATER)
        await store_new(store, payment, waiting, failed, voided)

        for expected in (payment, waiting, failed, voided):
            assert await store.get(expected.payment_id) == replace(expected, version=1)
        stored_waiting = await store.get(waiting.payment_id)
        assert stored_waiting is not None and stored_waiting.action == waiting.action
        stored_voided = await store.get(voided.payment_id)
        assert stored_voided is not None and stored_voided.reason is OrderEndReason.PAYMENT_TIMEOUT

    async def test_a_second_payment_for_an_order_is_refused_and_its_transaction_writes_nothing(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        await store_new(store, payment)
        rival = replace(declined("ord-1")[0], payment_id="pay_rival")
        innocent, event = declined("ord-2")
        cause = delivery(requested("ord-2"))

        with pytest.raises(ConcurrentUpdate):
            async with store.transaction(CONSUMER) as tx:
                await tx.add_operations([operation("pay_x:void")])
                await tx.save(new=[innocent, rival], changed=[])
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_of(event)])

        assert await store.get("pay_rival") is None
        assert await store.for_orders(["ord-2"]) == {}
        assert (await store.for_orders(["ord-1"]))["ord-1"].payment_id == payment.payment_id
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await self.outbox_ids(store) == []
        assert await store.operations("pay_x") == []

    async def test_two_new_payments_for_one_order_in_one_transaction_are_refused(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")

        with pytest.raises(ConcurrentUpdate):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[payment, replace(payment, payment_id="pay_twin")], changed=[])

        assert await store.for_orders(["ord-1"]) == {}

    async def test_a_changed_payment_is_written_over_the_version_it_was_read_at(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        await store_new(store, payment)
        read = (await store.for_orders(["ord-1"]))["ord-1"]
        read.cancel(OrderEndReason.PAYMENT_TIMEOUT, LATER)

        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[], changed=[read])

        stored = await store.get(payment.payment_id)
        assert stored == replace(read, version=2)
        assert stored is not None and stored.status is PaymentStatus.VOIDED

    async def test_a_change_to_a_stale_version_raises_concurrent_update_and_writes_nothing(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        await store_new(store, payment)
        first = await store.get(payment.payment_id)
        second = await store.get(payment.payment_id)
        assert first is not None and second is not None
        first.cancel(OrderEndReason.PAYMENT_TIMEOUT, LATER)
        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[], changed=[first])
        second.cancel(OrderEndReason.PAYMENT_DECLINED, LATER)
        cause = delivery(requested("ord-1"))

        with pytest.raises(ConcurrentUpdate):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[declined("ord-2")[0]], changed=[second])
                tx.mark_applied([cause.envelope.id])

        assert await store.get(payment.payment_id) == replace(first, version=2)
        assert await store.for_orders(["ord-2"]) == {}
        assert await store.unapplied(CONSUMER, [cause]) == [cause]

    async def test_changing_a_payment_that_was_never_stored_is_refused(self, store: PaymentStore) -> None:
        payment, _ = authorized("ord-1")

        with pytest.raises(ConcurrentUpdate):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[], changed=[replace(payment, version=1)])

        assert await store.get(payment.payment_id) is None

    async def test_pending_since_lists_payments_waiting_for_the_payer_since_then_oldest_first(
        self, store: PaymentStore
    ) -> None:
        old = pending("ord-old", NOW)
        older = pending("ord-older", NOW - timedelta(minutes=1))
        fresh = pending("ord-fresh", LATER)
        card, _ = authorized("ord-card")
        await store_new(store, fresh, old, card, older)

        found = await store.pending_since(NOW, limit=10)

        assert [p.order_id for p in found] == ["ord-older", "ord-old"]
        assert [p.order_id for p in await store.pending_since(NOW, limit=1)] == ["ord-older"]
        assert [p.order_id for p in await store.pending_since(LATER, limit=10)] == [
            "ord-older",
            "ord-old",
            "ord-fresh",
        ]

    # --- apply-once bookkeeping and the outbox ------------------------------------------------------

    async def test_an_event_is_applied_once_per_consumer(self, store: PaymentStore) -> None:
        cause = delivery(requested("ord-1"))
        redelivered = replace(cause, offset=cause.offset + 100)
        other = delivery(requested("ord-2"))
        assert await store.unapplied(CONSUMER, [cause, redelivered, other]) == [cause, other]
        async with store.transaction(CONSUMER) as tx:
            tx.mark_applied([cause.envelope.id])

        assert await store.unapplied(CONSUMER, [cause, other]) == [other]
        assert await store.unapplied("another-consumer", [cause]) == [cause]
        payment, _ = authorized("ord-9")
        with pytest.raises(ConcurrentWrite):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[payment], changed=[])
                tx.mark_applied([cause.envelope.id])
        assert await store.get(payment.payment_id) is None

    async def test_a_transaction_whose_body_raises_writes_nothing(self, store: PaymentStore) -> None:
        payment, event = authorized("ord-1")
        cause = delivery(requested("ord-1"))

        with pytest.raises(RuntimeError, match="the handler failed"):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[payment], changed=[])
                await tx.add_operations([operation(f"{payment.payment_id}:void")])
                await tx.record_nonce("alipay:n-1", NOW)
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_of(event)])
                raise RuntimeError("the handler failed")

        assert await store.for_orders(["ord-1"]) == {}
        assert await store.operations(payment.payment_id) == []
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await self.outbox_ids(store) == []
        async with store.transaction(CONSUMER) as tx:
            await tx.record_nonce("alipay:n-1", NOW)  # not recorded by the failed transaction

    async def test_emitted_events_are_in_the_outbox_in_the_order_emitted(self, store: PaymentStore) -> None:
        payment, event = authorized("ord-1")
        _, other_event = declined("ord-2")
        envelopes = [envelope_of(event), envelope_of(other_event)]
        later = envelope_of(authorized("ord-3")[1])

        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[payment], changed=[])
            tx.emit(envelopes)
        async with store.transaction(CONSUMER) as tx:
            tx.emit([later])

        assert await self.outbox_ids(store) == [e.id for e in [*envelopes, later]]

    # --- operations -------------------------------------------------------------------------------

    async def test_added_operations_are_queued_unclaimed_with_every_field(self, store: PaymentStore) -> None:
        payment, authorize = new_payment("ord-1")
        void = operation(
            f"{payment.payment_id}:void",
            announce=True,
            late=True,
            refund_reason=RefundReason.LATE_PAYMENT,
            detail="PAYMENT_TIMEOUT",
            attempts=2,
            last_error="ProviderUnavailable: down",
        )

        await store_new(store, payment, operations=[authorize, void])

        assert await store.operations(payment.payment_id) == [authorize, void]
        assert authorize.sealed_token == SEALED_TOKEN and authorize.deadline_at == NOW + timedelta(seconds=30)

    async def test_an_operation_added_again_stays_as_first_queued_even_while_claimed(
        self, store: PaymentStore
    ) -> None:
        first = operation("pay_1:void", announce=False)
        await store_new(store, operations=[first])
        [claimed] = await store.claim_operations(NOW, "worker-a", LEASE, limit=10)

        async with store.transaction(CONSUMER) as tx:
            await tx.add_operations([operation("pay_1:void", announce=True, due_at=LATER)])

        [queued] = await store.operations("pay_1")
        assert queued == claimed
        assert await store.claim_operations(NOW, "worker-b", LEASE, limit=10) == []

    async def test_claims_take_due_unclaimed_operations_earliest_first_up_to_the_limit(
        self, store: PaymentStore
    ) -> None:
        await store_new(
            store,
            operations=[
                operation("pay_2:void", NOW - timedelta(seconds=1)),
                operation("pay_1:void", NOW - timedelta(seconds=2)),
                operation("pay_3:void", NOW),
                operation("pay_4:void", NOW + timedelta(seconds=1)),
            ],
        )

        first = await store.claim_operations(NOW, "worker-a", LEASE, limit=2)
        rest = await store.claim_operations(NOW, "worker-b", LEASE, limit=10)

        assert [op.key for op in first] == ["pay_1:void", "pay_2:void"]
        assert [op.key for op in rest] == ["pay_3:void"], "claimed ones and those not yet due are left"
        for op in [*first, *rest]:
            assert op.claim_until == NOW + LEASE
        assert first[0].claim is not None and first[0].claim.startswith("worker-a:")
        assert len({op.claim for op in [*first, *rest]}) == 3, "every claim is its own"

    async def test_an_operation_whose_lease_ran_out_is_claimed_again_and_the_old_claim_is_lost(
        self, store: PaymentStore
    ) -> None:
        await store_new(store, operations=[operation("pay_1:void")])
        [crashed] = await store.claim_operations(NOW, "worker-a", LEASE, limit=1)
        assert (
            await store.claim_operations(NOW + LEASE - timedelta(seconds=1), "worker-b", LEASE, limit=1) == []
        )

        [taken] = await store.claim_operations(NOW + LEASE, "worker-b", LEASE, limit=1)

        assert taken.key == crashed.key and taken.claim != crashed.claim
        with pytest.raises(ClaimLost):
            async with store.transaction(CONSUMER) as tx:
                await tx.finish_operation(crashed)
        async with store.transaction(CONSUMER) as tx:
            await tx.finish_operation(taken)
        assert await store.operations("pay_1") == []

    async def test_finishing_an_operation_deletes_it_with_the_payment_change(
        self, store: PaymentStore
    ) -> None:
        payment, authorize = new_payment("ord-1")
        await store_new(store, payment, operations=[authorize])
        [claimed] = await store.claim_operations(NOW, "worker", LEASE, limit=1)
        read = await store.get(payment.payment_id)
        assert read is not None
        read.answered(claimed, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), NOW)

        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[], changed=[read])
            await tx.finish_operation(claimed)

        assert await store.operations(payment.payment_id) == [], "the sealed token left with it"
        stored = await store.get(payment.payment_id)
        assert stored is not None and stored.status is PaymentStatus.AUTHORIZED

    async def test_a_lost_claim_refuses_the_whole_transaction(self, store: PaymentStore) -> None:
        payment, authorize = new_payment("ord-1")
        await store_new(store, payment, operations=[authorize])
        [claimed] = await store.claim_operations(NOW, "worker", LEASE, limit=1)
        async with store.transaction(CONSUMER) as tx:
            await tx.drop_operations([authorize.key, "pay_no_such_operation"])
        read = await store.get(payment.payment_id)
        assert read is not None
        read.answered(claimed, ProviderReply(Outcome.AUTHORIZED, provider_ref="ref-1"), NOW)

        with pytest.raises(ClaimLost):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[], changed=[read])
                await tx.finish_operation(claimed)

        stored = await store.get(payment.payment_id)
        assert stored is not None and stored.status is PaymentStatus.REQUESTED
        with pytest.raises(ClaimLost):
            async with store.transaction(CONSUMER) as tx:
                await tx.reschedule_operation(claimed)

    async def test_a_rescheduled_operation_is_released_and_due_again_later(self, store: PaymentStore) -> None:
        await store_new(store, operations=[operation("pay_1:void")])
        [claimed] = await store.claim_operations(NOW, "worker", LEASE, limit=1)
        retry = replace(claimed, due_at=NOW + timedelta(seconds=2), attempts=1, last_error="down")

        async with store.transaction(CONSUMER) as tx:
            await tx.reschedule_operation(retry)

        [queued] = await store.operations("pay_1")
        assert queued == replace(retry, claim=None, claim_until=None)
        assert await store.claim_operations(NOW + timedelta(seconds=1), "worker", LEASE, limit=1) == []
        [again] = await store.claim_operations(NOW + timedelta(seconds=2), "worker", LEASE, limit=1)
        assert again.attempts == 1
        with pytest.raises(ClaimLost):
            async with store.transaction(CONSUMER) as tx:
                await tx.reschedule_operation(retry)  # its claim was released

    # --- callback nonces ------------------------------------------------------------------------

    async def test_a_nonce_is_accepted_once(self, store: PaymentStore) -> None:
        payment, _ = authorized("ord-1")
        async with store.transaction(CONSUMER) as tx:
            await tx.record_nonce("alipay:n-1", NOW)
        await store_new(store, payment)

        with pytest.raises(CallbackReplayed):
            async with store.transaction(CONSUMER) as tx:
                read = await store.get(payment.payment_id)
                assert read is not None
                read.cancel(OrderEndReason.PAYMENT_TIMEOUT, LATER)
                await tx.save(new=[], changed=[read])
                await tx.record_nonce("alipay:n-1", LATER)

        stored = await store.get(payment.payment_id)
        assert stored is not None and stored.status is PaymentStatus.AUTHORIZED, "the replay changed nothing"
        async with store.transaction(CONSUMER) as tx:
            await tx.record_nonce("wechat_pay:n-1", NOW)  # another method's nonce is another nonce


class TestInMemoryPaymentStore(PaymentStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryPaymentStore:
        return InMemoryPaymentStore()

    async def outbox_ids(self, store: PaymentStore) -> list[str]:
        assert isinstance(store, InMemoryPaymentStore)
        return [envelope.id for envelope in store.outbox]


class TestMongoPaymentStore(PaymentStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore) -> MongoPaymentStore:
        store = MongoPaymentStore(mongo_store, PERSONAL)
        await store.ensure_indexes(nonce_ttl_s=600)
        return store

    async def outbox_ids(self, store: PaymentStore) -> list[str]:
        assert isinstance(store, MongoPaymentStore)
        documents = store.base.db[OUTBOX].find().sort("_id", 1)
        return [decode(document["value"]).id async for document in documents]

    async def test_the_provider_reference_is_sealed_at_rest(self, store: MongoPaymentStore) -> None:
        payment, _ = authorized("ord-1")
        await store_new(store, payment)

        document = await store.base.db[PAYMENTS].find_one({"_id": payment.payment_id})

        assert document is not None
        assert "ref-ord-1" not in str(document)
        assert PERSONAL.open(document["provider_ref"]) == "ref-ord-1"

    async def test_the_sealed_token_is_kept_only_in_its_operation(self, store: MongoPaymentStore) -> None:
        payment, authorize = new_payment("ord-1")
        await store_new(store, payment, operations=[authorize])

        payment_doc = await store.base.db[PAYMENTS].find_one({"_id": payment.payment_id})
        operation_doc = await store.base.db[OPERATIONS].find_one({"_id": authorize.key})

        assert operation_doc is not None and operation_doc["sealed_token"] == SEALED_TOKEN
        assert SEALED_TOKEN not in str(payment_doc)

    async def test_nonces_expire_through_a_ttl_index(self, store: MongoPaymentStore) -> None:
        indexes = [index async for index in await store.base.db[NONCES].list_indexes()]

        assert any(dict(i["key"]) == {"at": 1} and i.get("expireAfterSeconds") == 600 for i in indexes)

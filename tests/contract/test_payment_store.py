"""The payment store's contract: what the handlers rely on, held of the in-memory twin and of Mongo."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.payment.domain import Payment, PaymentStatus, ProviderResult
from services.payment.store import ConcurrentUpdate, MongoPaymentStore, PaymentStore
from shared.contracts import Envelope, Event, OrderEndReason, PaymentMethod, PaymentRequested
from shared.errors import ConcurrentWrite
from shared.kafka import decode, new_envelope
from shared.mongo import OUTBOX, MongoStore
from tests.twins.payment import InMemoryPaymentStore
from tests.unit.samples import delivery

CONSUMER = "payment"
# Whole seconds: MongoDB keeps datetimes to the millisecond.
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 25, 12, 5, tzinfo=UTC)


def requested(order_id: str) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id, customer_id="cus-1", amount_fen=9_900, method=PaymentMethod.ALIPAY, token="tok"
    )


def authorized(order_id: str = "ord-1") -> tuple[Payment, Event]:
    return Payment.authorize(requested(order_id), ProviderResult(approved=True, provider_ref="ref-1"), NOW)


def declined(order_id: str) -> tuple[Payment, Event]:
    return Payment.authorize(
        requested(order_id), ProviderResult(approved=False, decline_code="CARD_DECLINED", message="no"), NOW
    )


def envelope_of(event: Event) -> Envelope:
    return new_envelope(event, source=CONSUMER, correlation_id="corr")


class PaymentStoreContract:
    """Subclasses provide the `store` fixture and read the outbox their way."""

    async def outbox_ids(self, store: PaymentStore) -> list[str]:
        raise NotImplementedError

    async def test_new_payments_are_stored_at_version_1_and_found_by_order_and_by_id(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        other, _ = declined("ord-2")

        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[payment, other], changed=[])

        found = await store.for_orders(["ord-1", "ord-2", "ord-unknown", "ord-1"])
        assert found == {"ord-1": replace(payment, version=1), "ord-2": replace(other, version=1)}
        assert await store.get(payment.payment_id) == replace(payment, version=1)
        assert await store.get("pay_unknown") is None
        assert await store.for_orders([]) == {}
        assert payment.version == 0, "the store reports versions through reads, not on what it was given"

    async def test_a_second_payment_for_an_order_is_refused_and_its_transaction_writes_nothing(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[payment], changed=[])
        rival = replace(declined("ord-1")[0], payment_id="pay_rival")
        innocent, event = declined("ord-2")
        cause = delivery(requested("ord-2"))

        with pytest.raises(ConcurrentUpdate):
            async with store.transaction(CONSUMER) as tx:
                await tx.save(new=[innocent, rival], changed=[])
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_of(event)])

        assert await store.get("pay_rival") is None
        assert await store.for_orders(["ord-2"]) == {}
        assert (await store.for_orders(["ord-1"]))["ord-1"].payment_id == payment.payment_id
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await self.outbox_ids(store) == []

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
        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[payment], changed=[])
        read = (await store.for_orders(["ord-1"]))["ord-1"]
        read.void(OrderEndReason.PAYMENT_TIMEOUT, LATER)

        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[], changed=[read])

        stored = await store.get(payment.payment_id)
        assert stored == replace(read, version=2)
        assert stored is not None and stored.status is PaymentStatus.VOIDED
        assert stored.reason is OrderEndReason.PAYMENT_TIMEOUT

    async def test_a_change_to_a_stale_version_raises_concurrent_update_and_writes_nothing(
        self, store: PaymentStore
    ) -> None:
        payment, _ = authorized("ord-1")
        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[payment], changed=[])
        first = await store.get(payment.payment_id)
        second = await store.get(payment.payment_id)
        assert first is not None and second is not None
        first.void(OrderEndReason.PAYMENT_TIMEOUT, LATER)
        async with store.transaction(CONSUMER) as tx:
            await tx.save(new=[], changed=[first])
        second.void(OrderEndReason.PAYMENT_DECLINED, LATER)
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
                tx.mark_applied([cause.envelope.id])
                tx.emit([envelope_of(event)])
                raise RuntimeError("the handler failed")

        assert await store.for_orders(["ord-1"]) == {}
        assert await store.unapplied(CONSUMER, [cause]) == [cause]
        assert await self.outbox_ids(store) == []

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
        store = MongoPaymentStore(mongo_store)
        await store.ensure_indexes()
        return store

    async def outbox_ids(self, store: PaymentStore) -> list[str]:
        assert isinstance(store, MongoPaymentStore)
        documents = store.base.db[OUTBOX].find().sort("_id", 1)
        return [decode(document["value"]).id async for document in documents]

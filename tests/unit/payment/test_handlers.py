import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from services.payment.domain import PaymentStatus, ProviderResult, payment_id_for
from services.payment.handlers import SERVICE, PaymentService, UnsupportedMethod, handle_batch
from services.payment.providers import PaymentProvider
from shared.contracts import (
    DeclineReason,
    Envelope,
    Event,
    OrderCancelled,
    OrderEndReason,
    OrderRejected,
    PaymentAuthorized,
    PaymentFailed,
    PaymentMethod,
    PaymentRequested,
    PaymentVoided,
)
from shared.kafka import Delivery, new_envelope
from tests.twins.payment import InMemoryPaymentStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
APPROVE = "tok_ok"  # what FakeProvider approves


class ProviderDown(ConnectionError):
    pass


@dataclass
class FakeProvider:
    """Approves `tok_ok`, declines anything else as CARD_DECLINED; can be made to fail."""

    authorized: list[tuple[str, int, str, str]] = field(default_factory=list)
    voided: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    void_down: bool = False
    # When set, each authorize waits until this many calls are in flight (proves concurrency).
    rendezvous: int = 0
    _in_flight: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def authorize(self, payment_id: str, amount_fen: int, currency: str, token: str) -> ProviderResult:
        self.authorized.append((payment_id, amount_fen, currency, token))
        if self.rendezvous:
            self._in_flight += 1
            if self._in_flight == self.rendezvous:
                self._all_in.set()
            await self._all_in.wait()
        if self.down:
            raise ProviderDown("provider unreachable")
        if token == APPROVE:
            return ProviderResult(approved=True, provider_ref=f"ref-{payment_id}")
        return ProviderResult(approved=False, decline_code="CARD_DECLINED", message="declined")

    async def void(self, payment_id: str, provider_ref: str) -> None:
        if self.void_down:
            raise ProviderDown("provider unreachable")
        self.voided.append((payment_id, provider_ref))


@dataclass
class World:
    store: InMemoryPaymentStore
    provider: FakeProvider
    service: PaymentService
    offset: int = 0

    def deliver(self, event: Event, envelope: Envelope | None = None) -> Delivery:
        envelope = envelope or new_envelope(event, source="order", correlation_id=f"corr-{event.order_id}")  # type: ignore[attr-defined]
        self.offset += 1
        return Delivery(envelope, event, "order.events", 0, self.offset)

    async def handle(self, *events: Event) -> list[Envelope]:
        before = len(self.store.outbox)
        await handle_batch(self.service, [self.deliver(e) for e in events])
        return self.store.outbox[before:]


@pytest.fixture
def world() -> World:
    store = InMemoryPaymentStore()
    provider = FakeProvider()
    providers: dict[PaymentMethod, PaymentProvider] = dict.fromkeys(PaymentMethod, provider)
    return World(store, provider, PaymentService(store=store, providers=providers, clock=lambda: NOW))


def requested(order_id: str = "ord-1", token: str = APPROVE, amount_fen: int = 9_900) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id,
        customer_id="cus-1",
        amount_fen=amount_fen,
        method=PaymentMethod.BANK_CARD,
        token=token,
    )


def cancelled(
    order_id: str = "ord-1", reason: OrderEndReason = OrderEndReason.PAYMENT_TIMEOUT
) -> OrderCancelled:
    return OrderCancelled(order_id=order_id, order_no="20261125-000001", customer_id="cus-1", reason=reason)


def events_of(envelopes: list[Envelope]) -> list[str]:
    return [env.type for env in envelopes]


async def test_an_approved_request_authorizes_once_and_replies_to_the_request(world: World) -> None:
    delivery = world.deliver(requested())

    await handle_batch(world.service, [delivery])

    pay_id = payment_id_for("ord-1")
    assert world.provider.authorized == [(pay_id, 9_900, "CNY", "tok_ok")]
    [out] = world.store.outbox
    assert out.type == PaymentAuthorized.TYPE
    assert out.data["provider_ref"] == f"ref-{pay_id}"
    assert (out.causation_id, out.correlation_id, out.subject) == (
        delivery.envelope.id,
        "corr-ord-1",
        "ord-1",
    )
    payment = world.store.payments[pay_id]
    assert (payment.status, payment.order_id, payment.amount_fen) == (
        PaymentStatus.AUTHORIZED,
        "ord-1",
        9_900,
    )
    assert f"{SERVICE}:{delivery.envelope.id}" in world.store.ledger.processed


async def test_a_decline_fails_the_payment_with_its_reason(world: World) -> None:
    [out] = await world.handle(requested(token="tok_bad"))

    assert out.type == PaymentFailed.TYPE
    assert out.data["reason"] == DeclineReason.CARD_DECLINED
    assert world.store.payments[payment_id_for("ord-1")].status is PaymentStatus.FAILED


async def test_a_duplicate_request_in_the_same_batch_calls_the_provider_once(world: World) -> None:
    out = await world.handle(requested(), requested())

    assert len(world.provider.authorized) == 1
    assert events_of(out) == [PaymentAuthorized.TYPE]
    assert len(world.store.ledger.processed) == 2


async def test_a_duplicate_request_in_a_later_batch_calls_no_provider_and_emits_nothing(world: World) -> None:
    await world.handle(requested())

    assert await world.handle(requested()) == []
    assert len(world.provider.authorized) == 1


async def test_a_redelivered_envelope_is_skipped(world: World) -> None:
    delivery = world.deliver(requested())
    await handle_batch(world.service, [delivery])

    await handle_batch(world.service, [delivery])

    assert len(world.provider.authorized) == 1
    assert len(world.store.outbox) == 1


async def test_cancelling_an_authorized_order_voids_its_payment(world: World) -> None:
    await world.handle(requested())

    [out] = await world.handle(cancelled(reason=OrderEndReason.PAYMENT_TIMEOUT))

    pay_id = payment_id_for("ord-1")
    assert out.type == PaymentVoided.TYPE
    assert (out.data["reason"], out.data["amount_fen"], out.data["payment_id"]) == (
        "PAYMENT_TIMEOUT",
        9_900,
        pay_id,
    )
    assert world.provider.voided == [(pay_id, f"ref-{pay_id}")]
    payment = world.store.payments[pay_id]
    assert payment.status is PaymentStatus.VOIDED
    assert [e.status for e in payment.timeline] == [PaymentStatus.AUTHORIZED, PaymentStatus.VOIDED]


async def test_cancelling_an_order_without_payment_does_nothing(world: World) -> None:
    assert await world.handle(cancelled()) == []
    assert world.provider.voided == []
    assert world.store.payments == {}
    assert len(world.store.ledger.processed) == 1


async def test_cancelling_an_order_whose_payment_failed_voids_nothing(world: World) -> None:
    await world.handle(requested(token="tok_bad"))

    assert await world.handle(cancelled()) == []
    assert world.provider.voided == []


async def test_a_second_cancellation_voids_once(world: World) -> None:
    await world.handle(requested())
    await world.handle(cancelled())

    assert await world.handle(cancelled()) == []
    assert len(world.provider.voided) == 1


async def test_request_and_cancellation_in_one_batch_authorize_then_void(world: World) -> None:
    out = await world.handle(requested(), cancelled())

    assert events_of(out) == [PaymentAuthorized.TYPE, PaymentVoided.TYPE]
    assert world.store.payments[payment_id_for("ord-1")].status is PaymentStatus.VOIDED
    assert len(world.provider.voided) == 1


async def test_providers_are_called_concurrently_for_a_batch(world: World) -> None:
    world.provider.rendezvous = 3

    out = await asyncio.wait_for(
        world.handle(requested("a"), requested("b", token="tok_bad"), requested("c")), 5
    )

    assert events_of(out) == [PaymentAuthorized.TYPE, PaymentFailed.TYPE, PaymentAuthorized.TYPE]
    assert [e.subject for e in out] == ["a", "b", "c"]


async def test_a_provider_error_propagates_and_writes_nothing(world: World) -> None:
    world.provider.down = True
    delivery = world.deliver(requested())

    with pytest.raises(ProviderDown):
        await handle_batch(world.service, [delivery])

    assert world.store.payments == {}
    assert world.store.outbox == []
    assert world.store.ledger.processed == set()

    world.provider.down = False
    await handle_batch(world.service, [delivery])  # the consumer's retry

    assert [call[0] for call in world.provider.authorized] == [payment_id_for("ord-1")] * 2
    assert events_of(world.store.outbox) == [PaymentAuthorized.TYPE]


async def test_a_void_error_propagates_and_keeps_the_authorization(world: World) -> None:
    await world.handle(requested())
    world.provider.void_down = True

    with pytest.raises(ProviderDown):
        await world.handle(cancelled())

    assert world.store.payments[payment_id_for("ord-1")].status is PaymentStatus.AUTHORIZED
    assert events_of(world.store.outbox) == [PaymentAuthorized.TYPE]


async def test_a_method_without_adapter_is_an_error(world: World) -> None:
    world.service.providers = {}

    with pytest.raises(UnsupportedMethod):
        await world.handle(requested())


async def test_other_order_events_are_passed_over_without_a_write(world: World) -> None:
    rejected = OrderRejected(order_id="ord-1", order_no="n", customer_id="cus-1", reason="FRAUD")

    assert await world.handle(rejected) == []
    assert world.store.ledger.processed == set(), "an event that changes nothing is not recorded"
    assert world.provider.authorized == []

"""Use cases of the payment service: authorize what the order service requests, void what it cancels."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.payment.domain import Payment, ProviderResult, payment_id_for
from services.payment.providers import PaymentProvider, Providers
from services.payment.store import PaymentStore
from shared.clock import Clock, utc_now
from shared.contracts import Envelope, OrderCancelled, OrderEvent, PaymentMethod, PaymentRequested
from shared.handlers import Handlers, Replies
from shared.kafka import Delivery
from shared.logging import get_logger

SERVICE = "payment"
log = get_logger(__name__)


@dataclass
class PaymentService:
    store: PaymentStore
    providers: Providers
    clock: Clock = utc_now

    def provider(self, method: PaymentMethod) -> PaymentProvider:
        try:
            return self.providers[method]
        except KeyError:
            raise UnsupportedMethod(f"no provider adapter for {method.value}") from None


class UnsupportedMethod(LookupError):
    """No adapter is configured for a payment method: dead-lettered rather than guessed."""


@dataclass(kw_only=True)
class Batch(Replies):
    """The in-memory view a consumed batch is applied to before one transaction stores it."""

    payments: dict[str, Payment]  # by order id: what is stored plus what this batch creates
    answers: dict[str, ProviderResult]  # by order id: the providers' answers fetched for this batch
    now: datetime
    new: dict[str, Payment] = field(default_factory=dict)
    changed: dict[str, Payment] = field(default_factory=dict)
    to_void: list[Payment] = field(default_factory=list)


def on_payment_requested(batch: Batch, event: PaymentRequested, cause: Envelope) -> None:
    """Record the provider's answer as the order's payment and tell the order service."""
    if event.order_id in batch.payments:
        # The order's one payment exists: this is a re-sent request, already answered.
        log.info("duplicate_payment_request", order_id=event.order_id, event_id=cause.id)
        return
    payment, outcome = Payment.authorize(event, batch.answers[event.order_id], batch.now)
    batch.payments[event.order_id] = batch.new[event.order_id] = payment
    batch.reply(cause, [outcome])


def on_order_cancelled(batch: Batch, event: OrderCancelled, cause: Envelope) -> None:
    """Void the authorization of an order that was cancelled after it was paid."""
    payment = batch.payments.get(event.order_id)
    if payment is None:
        return
    events = payment.void(event.reason, batch.now)
    if not events:
        return
    if event.order_id not in batch.new:
        batch.changed[event.order_id] = payment
    batch.to_void.append(payment)
    batch.reply(cause, events)


def requests_to_authorize(fresh: Sequence[Delivery], stored: dict[str, Payment]) -> list[PaymentRequested]:
    """The first request of each order that has no payment yet: the only ones a provider sees."""
    wanted: dict[str, PaymentRequested] = {}
    for delivery in fresh:
        event = delivery.event
        if isinstance(event, PaymentRequested) and event.order_id not in stored:
            wanted.setdefault(event.order_id, event)
    return list(wanted.values())


async def _authorize(service: PaymentService, request: PaymentRequested) -> ProviderResult:
    return await service.provider(request.method).authorize(
        payment_id_for(request.order_id), request.amount_fen, request.currency, request.token
    )


async def _void(service: PaymentService, payment: Payment) -> None:
    if payment.provider_ref is None:
        raise AssertionError(f"authorized payment {payment.payment_id} has no provider reference")
    await service.provider(payment.method).void(payment.payment_id, payment.provider_ref)


async def handle_batch(service: PaymentService, deliveries: Sequence[Delivery]) -> None:
    """Call the providers for a consumed batch, then store it all in one transaction.

    A provider that raises fails the whole batch before anything is written; the consumer retries
    it, and the payment ids (the providers' idempotency keys) keep a retry from charging twice.
    """
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    order_ids = {d.event.order_id for d in fresh if isinstance(d.event, OrderEvent)}
    stored = await service.store.for_orders(order_ids) if order_ids else {}
    requests = requests_to_authorize(fresh, stored)
    answers = await asyncio.gather(*(_authorize(service, request) for request in requests))
    batch = Batch(
        source=SERVICE,
        payments=stored,
        answers={request.order_id: answer for request, answer in zip(requests, answers, strict=True)},
        now=service.clock(),
    )
    HANDLERS.dispatch(batch, fresh)
    await asyncio.gather(*(_void(service, payment) for payment in batch.to_void))
    async with service.store.transaction(SERVICE) as tx:
        await tx.save(new=list(batch.new.values()), changed=list(batch.changed.values()))
        tx.mark_applied([d.envelope.id for d in fresh])
        tx.emit(batch.outgoing)


HANDLERS = Handlers[Batch]().on(PaymentRequested, on_payment_requested).on(OrderCancelled, on_order_cancelled)

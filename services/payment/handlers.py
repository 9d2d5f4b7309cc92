"""Use cases of the payment service: the order events it consumes, the provider's callbacks and the
reconciliation of payments left waiting.

None of them waits for a provider's answer to money moving: they store the payment's change, the
provider operations it calls for and the events it causes in one transaction, and the operations
worker (services/payment/worker.py) runs the operations and stores their answers the same way.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services.payment import metrics
from services.payment.adapters import ProviderRejected
from services.payment.domain import (
    NEEDS_TOKEN,
    Decision,
    Notice,
    Operation,
    Outcome,
    Payment,
    RefundRefused,
)
from services.payment.providers import (
    CallbackNotice,
    PaymentProvider,
    ProviderAnswer,
    Providers,
    ProviderUnavailable,
)
from services.payment.store import PaymentStore
from shared.clock import Clock, utc_now
from shared.contracts import (
    Envelope,
    Event,
    OrderCancelled,
    OrderConfirmed,
    OrderEvent,
    PaymentMethod,
    PaymentRequested,
    RefundRequested,
)
from shared.contracts.common import looks_like_card_number
from shared.crypto import UnreadableData
from shared.errors import is_transient
from shared.handlers import Handlers, Replies
from shared.kafka import Delivery, describe, new_envelope
from shared.logging import get_logger

SERVICE = "payment"
# A stored change that keeps losing races this often in a row is left to the next attempt (the
# consumer's retry, the operation's lease, the provider's resend).
STORE_ATTEMPTS = 5
RECONCILE_BATCH = 100
_EVENT_ID_NAMESPACE = uuid.UUID("a8d3c6e1-2f4b-4e5a-9c7d-0b1e2f3a4c5d")
log = get_logger(__name__)


class TokenOpening(Protocol):
    """Opens the provider token the gateway sealed for this service (shared.crypto.TokenOpener)."""

    def open(self, sealed: str) -> str: ...


@dataclass(frozen=True)
class PaymentPolicy:
    # How long an authorization may keep failing to reach the provider before the payment fails.
    deadline: timedelta
    # The longest wait between two tries of a provider call.
    max_backoff: timedelta
    # Where providers send their callbacks: `<base>/v1/payments/callbacks/<method>`.
    callback_base_url: str

    def notify_url(self, method: PaymentMethod) -> str:
        return f"{self.callback_base_url.rstrip('/')}/v1/payments/callbacks/{method.value}"


@dataclass
class PaymentService:
    store: PaymentStore
    providers: Providers
    opener: TokenOpening
    policy: PaymentPolicy
    clock: Clock = utc_now
    # In [0, 1): spreads retries (not a secret, so the stdlib generator does).
    jitter: Callable[[], float] = random.random  # noqa: S311 - backoff jitter, not cryptography
    # Set when operations were stored, so that the worker runs them at once instead of at its next poll.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def provider(self, method: PaymentMethod) -> PaymentProvider:
        try:
            return self.providers[method]
        except KeyError:
            raise UnsupportedMethod(f"no provider adapter for {method.value}") from None


class UnsupportedMethod(LookupError):
    """No adapter is configured for a payment method: dead-lettered rather than guessed."""


class UnknownPayment(LookupError):
    """No payment under this id (for this method)."""


class UnusableToken(ValueError):
    """A provider token that must not be used: missing, in clear, a card number, not sealed for us."""


def open_token(opener: TokenOpening, method: PaymentMethod, sealed: str | None) -> str | None:
    """The provider token to authorize with (None for a wallet); raises UnusableToken saying why not.

    The token and the card number it might be are never part of the message."""
    if method not in NEEDS_TOKEN:
        return None
    if sealed is None:
        raise UnusableToken("no provider token: a card payment needs one")
    if looks_like_card_number(sealed):
        raise UnusableToken("a card number was sent where a provider token belongs")
    try:
        token = opener.open(sealed)
    except UnreadableData as error:
        raise UnusableToken(f"the provider token is not sealed for the payment service: {error}") from None
    if looks_like_card_number(token):
        raise UnusableToken("a card number was sealed where a provider token belongs")
    return token


# --- the order events ----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Batch(Replies):
    """The in-memory view a consumed batch is applied to before one transaction stores it."""

    payments: dict[str, Payment]  # by order id: what is stored plus what this batch creates
    now: datetime
    deadline: timedelta
    # Why a request's token cannot be used (None when it can), for the first request of each order.
    token_problems: dict[str, str | None]
    new: dict[str, Payment] = field(default_factory=dict)
    changed: dict[str, Payment] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)

    def decided(self, payment: Payment, decision: Decision, cause: Envelope) -> None:
        if decision.changed and payment.order_id not in self.new:
            self.changed[payment.order_id] = payment
        for key in decision.dropped:
            # An operation this batch decided is simply not stored; a stored one is deleted.
            if self.operations.pop(key, None) is None:
                self.dropped.add(key)
        for operation in decision.operations:
            self.operations.setdefault(operation.key, operation)
        self.reply(cause, decision.events)


def on_payment_requested(batch: Batch, event: PaymentRequested, cause: Envelope) -> None:
    """Create the order's payment and queue its authorization (or fail it for an unusable token)."""
    if event.order_id in batch.payments:
        # The order's one payment exists: this is a re-sent request, already under way.
        log.info("duplicate_payment_request", order_id=event.order_id, event_id=cause.id)
        return
    payment, decision = Payment.request(
        event,
        correlation_id=cause.correlation_id,
        now=batch.now,
        deadline=batch.deadline,
        token_problem=batch.token_problems[event.order_id],
    )
    batch.payments[event.order_id] = batch.new[event.order_id] = payment
    batch.decided(payment, decision, cause)


def on_order_confirmed(batch: Batch, event: OrderConfirmed, cause: Envelope) -> None:
    """Capture the authorized money of a confirmed order."""
    payment = batch.payments.get(event.order_id)
    if payment is None:
        log.warning("confirmed_without_payment", order_id=event.order_id, event_id=cause.id)
        return
    batch.decided(payment, payment.confirm(batch.now), cause)


def on_order_cancelled(batch: Batch, event: OrderCancelled, cause: Envelope) -> None:
    """Stop, release or give back the payment of an order that ended."""
    payment = batch.payments.get(event.order_id)
    if payment is None:
        return
    batch.decided(payment, payment.cancel(event.reason, batch.now), cause)


def on_refund_requested(batch: Batch, event: RefundRequested, cause: Envelope) -> None:
    """Queue a refund of part or all of what was taken; more than is left is refused (dead-lettered)."""
    payment = batch.payments.get(event.order_id)
    if payment is None:
        raise RefundRefused(f"refund {event.refund_id}: order {event.order_id} has no payment")
    batch.decided(payment, payment.request_refund(event, batch.now), cause)


def token_problems(service: PaymentService, fresh: Sequence[Delivery]) -> dict[str, str | None]:
    """For the first request of each order: why its token cannot be used, or None.

    The token is opened here only to be checked and is dropped at once: the operation stores it
    sealed, and the worker opens it again for the one call it is for."""
    problems: dict[str, str | None] = {}
    for delivery in fresh:
        event = delivery.event
        if not isinstance(event, PaymentRequested) or event.order_id in problems:
            continue
        service.provider(event.method)  # an unsupported method is refused before anything is stored
        try:
            open_token(service.opener, event.method, event.sealed_token)
            problems[event.order_id] = None
        except UnusableToken as problem:
            problems[event.order_id] = str(problem)
    return problems


async def handle_batch(service: PaymentService, deliveries: Sequence[Delivery]) -> None:
    """Decide a consumed batch and store it in one transaction: payments, operations, events."""
    fresh = await service.store.unapplied(SERVICE, HANDLERS.relevant(deliveries))
    if not fresh:
        return
    order_ids = {d.event.order_id for d in fresh if isinstance(d.event, OrderEvent)}
    stored = await service.store.for_orders(order_ids) if order_ids else {}
    batch = Batch(
        source=SERVICE,
        payments=stored,
        now=service.clock(),
        deadline=service.policy.deadline,
        token_problems=token_problems(service, fresh),
    )
    HANDLERS.dispatch(batch, fresh)
    async with service.store.transaction(SERVICE) as tx:
        await tx.save(new=list(batch.new.values()), changed=list(batch.changed.values()))
        await tx.drop_operations(sorted(batch.dropped))
        await tx.add_operations(list(batch.operations.values()))
        tx.mark_applied([d.envelope.id for d in fresh])
        tx.emit(batch.outgoing)
    if batch.operations:
        service.wake.set()


HANDLERS = (
    Handlers[Batch]()
    .on(PaymentRequested, on_payment_requested)
    .on(OrderConfirmed, on_order_confirmed)
    .on(OrderCancelled, on_order_cancelled)
    .on(RefundRequested, on_refund_requested)
)


# --- one payment's change, outside a consumed batch -----------------------------------------------


async def change_payment(
    service: PaymentService,
    payment_id: str,
    decide: Callable[[Payment], Decision],
    *,
    finish: Operation | None = None,
    reschedule: Operation | None = None,
    nonce: str | None = None,
) -> Decision:
    """Read a payment, decide, and store the decision in one transaction with the operation it
    answers (finished or rescheduled) and the callback nonce it consumes.

    A concurrent change is met by reading again and deciding again on the fresh payment; the
    other failures go up (ClaimLost, CallbackReplayed, UnknownPayment, the store's own)."""
    for attempt in range(1, STORE_ATTEMPTS + 1):
        payment = await service.store.get(payment_id)
        if payment is None:
            raise UnknownPayment(f"no payment {payment_id}")
        read_at = payment.version
        decision = decide(payment)
        try:
            async with service.store.transaction(SERVICE) as tx:
                if nonce is not None:
                    await tx.record_nonce(nonce, service.clock())
                if decision.changed:
                    await tx.save(new=[], changed=[payment])
                await tx.drop_operations(decision.dropped)
                await tx.add_operations(decision.operations)
                if finish is not None:
                    await tx.finish_operation(finish)
                if reschedule is not None:
                    await tx.reschedule_operation(reschedule)
                tx.emit([_envelope(payment, read_at, index, e) for index, e in enumerate(decision.events)])
        except Exception as error:
            if attempt == STORE_ATTEMPTS or not is_transient(error):
                raise
            log.info("payment_change_retried", payment_id=payment_id, error=describe(error))
            continue
        if decision.operations:
            service.wake.set()
        return decision
    raise AssertionError("unreachable")


def _envelope(payment: Payment, read_at: int, index: int, event: Event) -> Envelope:
    # The id derives from the change that caused the event: the payment's version before it.
    name = f"{payment.payment_id}/{read_at}/{index}/{event.TYPE}"
    return new_envelope(
        event,
        source=SERVICE,
        correlation_id=payment.correlation_id,
        event_id=str(uuid.uuid5(_EVENT_ID_NAMESPACE, name)),
    )


# --- the providers ------------------------------------------------------------------------------


async def call_provider(
    method: PaymentMethod, operation: str, call: Awaitable[ProviderAnswer]
) -> ProviderAnswer:
    """Await a provider call, counting it by its outcome and timing it."""
    started = time.perf_counter()
    outcome = "error"
    try:
        answer = await call
        outcome = answer.outcome.value
        return answer
    except ProviderUnavailable:
        outcome = "unavailable"
        raise
    except ProviderRejected:
        outcome = "rejected"
        raise
    finally:
        metrics.PROVIDER_CALLS.labels(method.value, operation, outcome).inc()
        metrics.PROVIDER_CALL_SECONDS.labels(method.value, operation).observe(time.perf_counter() - started)


def notice_of(callback: CallbackNotice) -> Notice:
    return Notice(
        outcome=callback.outcome,
        amount_fen=callback.amount_fen,
        provider_ref=callback.provider_ref,
        notification_id=callback.notification_id,
        decline_code=callback.decline_code,
        message=callback.message,
    )


async def apply_callback(
    service: PaymentService, method: PaymentMethod, callback: CallbackNotice
) -> Decision:
    """Apply a verified callback and consume its nonce, together; answers what it decided (nothing
    for a resend). Raises UnknownPayment, or CallbackReplayed for a nonce accepted before."""
    now = service.clock()
    notice = notice_of(callback)

    def decide(payment: Payment) -> Decision:
        if payment.method is not method:
            raise UnknownPayment(f"no {method.value} payment {payment.payment_id}")
        return payment.notice(notice, now)

    return await change_payment(
        service, callback.payment_id, decide, nonce=f"{method.value}:{callback.nonce}"
    )


async def reconcile(service: PaymentService, *, after: timedelta) -> int:
    """Ask the providers about payments left waiting for the payer longer than `after`, and apply
    what they say as a callback would; returns how many changed."""
    now = service.clock()
    waiting = await service.store.pending_since(now - after, RECONCILE_BATCH)
    changed = 0
    for payment in waiting:
        if await _reconcile_one(service, payment, now):
            changed += 1
    return changed


async def _reconcile_one(service: PaymentService, payment: Payment, now: datetime) -> bool:
    try:
        answer = await call_provider(
            payment.method, "query", service.provider(payment.method).query(payment.payment_id)
        )
    except ProviderUnavailable as error:
        log.info("reconcile_deferred", payment_id=payment.payment_id, error=describe(error))
        return False
    outcome = answer.outcome
    if outcome not in (Outcome.AUTHORIZED, Outcome.CAPTURED, Outcome.DECLINED):
        return False  # still waiting, or closed: the order's own payment deadline ends it
    notice = Notice(
        outcome=outcome,
        amount_fen=payment.amount_fen if answer.amount_fen is None else answer.amount_fen,
        provider_ref=answer.provider_ref,
        decline_code=answer.decline_code,
        message=answer.message,
    )
    decision = await change_payment(service, payment.payment_id, lambda fresh: fresh.notice(notice, now))
    if decision.changed:
        log.info("reconciled", payment_id=payment.payment_id, outcome=outcome.value)
    return decision.changed

"""The operations worker: runs the provider calls the payments' decisions queued, a bounded number
at a time, and stores each answer (the payment's change and the events it causes) in a transaction.

Every replica runs one. An operation is claimed before it runs, for a lease longer than a provider
call may take, so that one replica runs it at a time; a replica that dies mid-call leaves its claim
to expire, and the operation runs again under the same idempotency key, which moves the money once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from pymongo.errors import PyMongoError

from services.payment import metrics
from services.payment.adapters import ProviderRejected
from services.payment.domain import (
    Decision,
    Operation,
    OperationKind,
    Outcome,
    Payment,
    ProviderReply,
    Readiness,
)
from services.payment.handlers import (
    SERVICE,
    PaymentService,
    UnusableToken,
    call_provider,
    change_payment,
    open_token,
)
from services.payment.providers import ProviderUnavailable
from services.payment.store import ClaimLost
from shared.contracts import DeclineReason
from shared.errors import Outage
from shared.kafka import describe
from shared.logging import get_logger

log = get_logger(__name__)
# The answers that settle each kind of operation; an authorization's every answer settles it.
_DONE = {
    OperationKind.AUTHORIZE: frozenset(Outcome),
    OperationKind.CAPTURE: frozenset({Outcome.CAPTURED}),
    OperationKind.VOID: frozenset({Outcome.VOIDED, Outcome.NOT_FOUND, Outcome.CAPTURED}),
    OperationKind.REFUND: frozenset({Outcome.REFUNDED}),
}


@dataclass
class OperationWorker:
    service: PaymentService
    # How many provider calls this process makes at once.
    concurrency: int
    # How often to look for due operations when nothing wakes the worker.
    poll_s: float
    # How long a claim keeps other replicas off an operation: longer than a provider call takes.
    lease: timedelta
    # Who claims (host, process): claims carry it, for whoever reads the database.
    owner: str
    outage_limit_s: float

    async def run(self, stop: asyncio.Event) -> None:
        """Claim due operations while there is room, run them, and wait for one to end, for new ones
        to be stored, or for the next poll; on stop, finish the calls in hand."""
        outage = Outage("the payment operations' datastore", self.outage_limit_s)
        running: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.concurrency - len(running)
                if free > 0:
                    # Cleared before claiming: whatever is stored from now on wakes the next wait.
                    self.service.wake.clear()
                    try:
                        claimed = await self.service.store.claim_operations(
                            self.service.clock(), self.owner, self.lease, free
                        )
                        outage.recovered()
                    except PyMongoError as error:
                        outage.failed(error)
                        log.warning("operation_claim_failed", error=describe(error))
                        claimed = []
                    for operation in claimed:
                        task = asyncio.create_task(self._run(operation))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if claimed and len(claimed) == free:
                        continue  # no room left: the wait below is for a running one to end
                await self._wait(stop, running, wake=len(running) < self.concurrency)
        finally:
            if running:
                await asyncio.gather(*running)

    async def _wait(self, stop: asyncio.Event, running: set[asyncio.Task[None]], *, wake: bool) -> None:
        signals = [asyncio.ensure_future(stop.wait())]
        if wake:
            signals.append(asyncio.ensure_future(self.service.wake.wait()))
        try:
            await asyncio.wait(
                [*signals, *running],
                timeout=self.poll_s if wake else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for signal in signals:
                signal.cancel()

    async def _run(self, operation: Operation) -> None:
        metrics.OPERATIONS_IN_FLIGHT.inc()
        try:
            await run_operation(self.service, operation)
        except Exception:  # noqa: BLE001 - logged; the claim lapses and the operation runs again
            log.exception("operation_failed", payment_id=operation.payment_id, kind=operation.kind.value)
        finally:
            metrics.OPERATIONS_IN_FLIGHT.dec()


async def run_operation(service: PaymentService, operation: Operation) -> None:
    """Run one claimed operation: call the provider unless the payment no longer needs it, then
    store the answer with the operation finished, or the operation rescheduled after a failed call.

    Raises what the store raises; the operation then stays claimed until its lease runs out."""
    payment = await service.store.get(operation.payment_id)
    readiness = Readiness.SKIP if payment is None else payment.readiness(operation)
    try:
        if payment is None or readiness is Readiness.SKIP:
            await _finish_unneeded(service, operation)
            return
        if readiness is Readiness.WAIT:
            retry = operation.retried(
                service.clock(),
                jitter=service.jitter(),
                max_backoff=service.policy.max_backoff,
                error="waiting for the capture",
            )
            await change_payment(service, operation.payment_id, _unchanged, reschedule=retry)
            return
        if readiness is Readiness.REFUSE:
            now = service.clock()
            why = "the money to refund was not taken"
            await change_payment(
                service,
                operation.payment_id,
                lambda p: p.refuse_refund(operation.key, why, now),
                finish=operation,
            )
            return
        await _call_and_store(service, operation, payment)
    except ClaimLost as lost:
        # Finished, cancelled or taken over meanwhile: whoever holds it now stores the answer.
        log.info(
            "operation_claim_lost",
            payment_id=operation.payment_id,
            kind=operation.kind.value,
            error=str(lost),
        )


async def _call_and_store(service: PaymentService, operation: Operation, payment: Payment) -> None:
    try:
        reply = await _call(service, operation, payment)
    except ProviderRejected as error:
        # The provider refused the request itself (our configuration or request is at fault): an
        # answer that asking again would only repeat, so it settles the operation as a refusal.
        log.warning(
            "provider_rejected", payment_id=operation.payment_id, kind=operation.kind.value, error=str(error)
        )
        reply = ProviderReply(Outcome.DECLINED, decline_code=error.code, message=str(error))
    except ProviderUnavailable as error:
        now = service.clock()
        if operation.gives_up(now):
            log.warning("provider_deadline_passed", payment_id=operation.payment_id, error=describe(error))
            await change_payment(
                service, operation.payment_id, lambda p: p.provider_timed_out(now), finish=operation
            )
            return
        retry = operation.retried(
            now, jitter=service.jitter(), max_backoff=service.policy.max_backoff, error=describe(error)
        )
        log.info(
            "provider_call_retried",
            payment_id=operation.payment_id,
            kind=operation.kind.value,
            attempts=retry.attempts,
            error=describe(error),
        )
        await change_payment(service, operation.payment_id, _unchanged, reschedule=retry)
        return
    now = service.clock()
    decision = await change_payment(
        service, operation.payment_id, lambda p: p.answered(operation, reply, now), finish=operation
    )
    if reply.outcome not in _DONE[operation.kind]:
        # A refused capture, void or refund is not retried (it would be refused again): someone looks.
        log.warning(
            "operation_refused",
            payment_id=operation.payment_id,
            kind=operation.kind.value,
            outcome=reply.outcome.value,
            code=reply.decline_code,
        )
    if decision.events:
        log.info(
            "operation_answered",
            payment_id=operation.payment_id,
            kind=operation.kind.value,
            events=[event.TYPE for event in decision.events],
        )


async def _call(service: PaymentService, operation: Operation, payment: Payment) -> ProviderReply:
    """The provider's answer to the operation (a token that cannot be used answers itself)."""
    provider = service.provider(operation.method)
    kind = operation.kind.value
    match operation.kind:
        case OperationKind.AUTHORIZE:
            try:
                token = open_token(service.opener, operation.method, operation.sealed_token)
            except UnusableToken as problem:
                return ProviderReply(
                    Outcome.DECLINED, decline_code=DeclineReason.INVALID_TOKEN, message=str(problem)
                )
            call = provider.authorize(
                payment.payment_id,
                payment.amount_fen,
                payment.currency,
                token,
                service.policy.notify_url(payment.method),
                f"Order {payment.order_id}",
            )
        case OperationKind.CAPTURE:
            reference = await _provider_ref(service, payment)
            call = provider.capture(payment.payment_id, reference, operation.amount_fen)
        case OperationKind.VOID:
            call = provider.void(payment.payment_id, payment.provider_ref)
        case OperationKind.REFUND:
            reference = await _provider_ref(service, payment)
            call = provider.refund(operation.key, payment.payment_id, reference, operation.amount_fen)
    return await call_provider(operation.method, kind, call)


async def _provider_ref(service: PaymentService, payment: Payment) -> str:
    """The provider's reference of the payment; asked of the provider when a void found the money
    taken without saying under which reference."""
    if payment.provider_ref is not None:
        return payment.provider_ref
    provider = service.provider(payment.method)
    answer = await call_provider(payment.method, "query", provider.query(payment.payment_id))
    if answer.provider_ref is None:
        raise ProviderUnavailable("the provider gave no reference for the payment yet")
    return answer.provider_ref


async def _finish_unneeded(service: PaymentService, operation: Operation) -> None:
    """Drop an operation the payment no longer needs (answered meanwhile by a callback, say)."""
    async with service.store.transaction(SERVICE) as tx:
        await tx.finish_operation(operation)


def _unchanged(_payment: Payment) -> Decision:
    return Decision()

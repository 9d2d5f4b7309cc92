"""Payments as pure rules: what each fact (a request, an order's end, a provider's answer or notice)
does to an order's one payment, which events it causes and which provider operations it asks for.

No I/O here. Handlers store a decision's payment change, operations and events in one transaction;
the operations worker later runs the operations against the provider and hands the answers back
to these methods. Every method is safe to call again with the same fact: a repeat decides nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from shared.contracts import (
    DeclineReason,
    Event,
    OrderEndReason,
    PayActionType,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentRequested,
    PaymentVoided,
    RefundReason,
    RefundRequested,
)

# Fixed forever: payment ids derived from it are stored and sent to providers as idempotency keys.
_PAYMENT_ID_NAMESPACE = uuid.UUID("3f6c1f0e-5b7a-4d2e-9a41-8c0d2b6e7f15")
# The first retry of a provider call waits about this long; each further one twice as long.
FIRST_RETRY_S = 0.5
# Methods whose authorization needs the client's provider token; wallets need none (the payer
# approves on the provider's page), and a token sent with one is dropped unread.
NEEDS_TOKEN = frozenset({PaymentMethod.BANK_CARD})


def payment_id_for(order_id: str) -> str:
    """One payment per order, with the same id on every redelivery, so a provider never charges twice."""
    return f"pay_{uuid.uuid5(_PAYMENT_ID_NAMESPACE, order_id).hex}"


def auto_refund_id(payment_id: str) -> str:
    """The refund id of the payment's one automatic refund (order ended, late or wrong money): every
    path that gives the whole payment back uses it, so two of them refund once."""
    return f"{payment_id}:refund"


class PaymentStatus(StrEnum):
    REQUESTED = "requested"  # the provider is to be asked for an authorization
    PENDING = "pending"  # a wallet waits for the payer on the provider's page
    AUTHORIZED = "authorized"  # held, to be captured when the order is confirmed
    CAPTURED = "captured"  # taken
    FAILED = "failed"  # declined, refused or no answer in time
    VOIDED = "voided"  # its order ended before the money was taken
    REFUNDED = "refunded"  # some or all of what was taken went back (refunded_fen of captured_fen)


ENDED = frozenset({PaymentStatus.FAILED, PaymentStatus.VOIDED})


class Outcome(StrEnum):
    """Where a provider says a payment (or one operation on it) stands."""

    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    DECLINED = "declined"
    VOIDED = "voided"
    REFUNDED = "refunded"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class PayAction:
    """What the payer must do on a wallet provider's side: scan a QR code or follow a redirect."""

    type: PayActionType
    url: str


@dataclass(frozen=True)
class ProviderReply:
    """A provider's answer to one operation, as the rules need it."""

    outcome: Outcome
    provider_ref: str | None = None
    action: PayAction | None = None
    decline_code: str | None = None
    message: str = ""
    amount_fen: int | None = None


@dataclass(frozen=True)
class Notice:
    """What a provider says of a payment on its own: a verified callback or a reconciliation query."""

    outcome: Outcome
    amount_fen: int
    provider_ref: str | None = None
    # The same on every resend of one callback; None for an answer to our own query.
    notification_id: str | None = None
    decline_code: str | None = None
    message: str = ""


class OperationKind(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class Readiness(StrEnum):
    """Whether an operation should call the provider now."""

    READY = "ready"
    WAIT = "wait"  # not yet: a refund waits for its capture
    SKIP = "skip"  # no more: the payment moved on (the operation is a leftover)
    REFUSE = "refuse"  # never: a refund of money that will not be taken


@dataclass(frozen=True)
class Operation:
    """A call to the provider that a decision asked for, run by the worker until it is answered.

    `key` is both the operation's id and the provider's idempotency key, so deciding the same
    operation twice stores it once and a call repeated after a crash moves the money once."""

    key: str
    kind: OperationKind
    payment_id: str
    method: PaymentMethod
    due_at: datetime
    attempts: int = 0
    # Authorize: no more retries after this (counted from when the request was stored).
    deadline_at: datetime | None = None
    # Authorize: the provider token as the gateway sealed it; it leaves with the operation.
    sealed_token: str | None = None
    # Capture and refund: how much.
    amount_fen: int = 0
    # Void: whether its order heard of the authorization (so PaymentVoided tells it of the release),
    # whether the money came after the order ended, and what to call the refund if the void finds
    # the money taken already.
    announce: bool = False
    late: bool = False
    refund_reason: RefundReason | None = None
    detail: str = ""
    last_error: str = ""
    # The worker's claim while it runs the operation: other replicas leave it alone until it ends.
    claim: str | None = None
    claim_until: datetime | None = None

    def gives_up(self, now: datetime) -> bool:
        """True when a failed call should not be tried again: an authorization past its deadline."""
        return self.deadline_at is not None and now >= self.deadline_at

    def retried(self, now: datetime, *, jitter: float, max_backoff: timedelta, error: str) -> Operation:
        """This operation due again after a failed attempt: exponential backoff, capped, with jitter
        (`jitter` in [0, 1)) so that replicas' retries spread; an authorization's last try is at its
        deadline."""
        full = min(max_backoff.total_seconds(), FIRST_RETRY_S * 2**self.attempts)
        due_at = now + timedelta(seconds=full / 2 + jitter * full / 2)
        if self.deadline_at is not None:
            due_at = min(due_at, self.deadline_at)
        return replace(self, attempts=self.attempts + 1, due_at=due_at, last_error=error[:500])


class RefundState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    REFUSED = "refused"  # the provider said no, or the money to give back was never taken


@dataclass(frozen=True)
class Refund:
    refund_id: str
    amount_fen: int
    reason: RefundReason
    detail: str
    state: RefundState
    requested_at: datetime


@dataclass(frozen=True)
class TimelineEntry:
    status: PaymentStatus
    at: datetime
    note: str = ""


@dataclass
class Decision:
    """What one fact did: whether the payment changed, the events and operations it causes, and the
    keys of queued operations it makes pointless."""

    changed: bool = False
    events: list[Event] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class RefundRefused(ValueError):
    """A refund that cannot be granted: more than what is left, or no money taken. The event asking
    for it is dead-lettered with this message; nothing changes."""


# Provider decline codes passed through as they are; anything else is PROVIDER_DECLINED.
_PASSED_THROUGH = frozenset(
    {DeclineReason.CARD_DECLINED, DeclineReason.INSUFFICIENT_FUNDS, DeclineReason.INVALID_TOKEN}
)


def decline_reason(code: str | None, message: str) -> tuple[DeclineReason, str]:
    """The stable reason code of a provider's decline, and the words for `detail`."""
    if code in _PASSED_THROUGH:
        return DeclineReason(code), message
    return DeclineReason.PROVIDER_DECLINED, " ".join(part for part in (code, message) if part)


@dataclass
class Payment:
    payment_id: str
    order_id: str
    customer_id: str
    method: PaymentMethod
    amount_fen: int
    currency: str
    correlation_id: str
    status: PaymentStatus
    created_at: datetime
    updated_at: datetime
    provider_ref: str | None = None
    action: PayAction | None = None
    # Why it failed (a provider's decline) or why it was voided (why its order ended).
    reason: DeclineReason | OrderEndReason | None = None
    detail: str = ""
    captured_fen: int = 0
    refunded_fen: int = 0
    refunds: list[Refund] = field(default_factory=list)
    # A capture is queued and not yet answered.
    capturing: bool = False
    # Why its order ended, once the order service said so (OrderCancelled).
    order_ended: OrderEndReason | None = None
    # Money that arrived after the payment had ended is being given back.
    giving_back: bool = False
    # The provider's notifications already applied (their resends change nothing).
    notices: list[str] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    # Bumped on every stored change; the store writes only over the version it read.
    version: int = 0

    # --- the order service's requests ---------------------------------------------------------

    @classmethod
    def request(
        cls,
        event: PaymentRequested,
        *,
        correlation_id: str,
        now: datetime,
        deadline: timedelta,
        token_problem: str | None,
    ) -> tuple[Payment, Decision]:
        """The payment an order asks for, and the authorization to ask of the provider; a token that
        cannot be used (`token_problem` says why) fails it at once, without asking the provider."""
        payment = cls(
            payment_id=payment_id_for(event.order_id),
            order_id=event.order_id,
            customer_id=event.customer_id,
            method=event.method,
            amount_fen=event.amount_fen,
            currency=event.currency,
            correlation_id=correlation_id,
            status=PaymentStatus.REQUESTED,
            created_at=now,
            updated_at=now,
            timeline=[TimelineEntry(PaymentStatus.REQUESTED, now)],
        )
        if token_problem is not None:
            decision = payment._fail(DeclineReason.INVALID_TOKEN, token_problem, now)
            return payment, decision
        authorize = Operation(
            key=payment.payment_id,
            kind=OperationKind.AUTHORIZE,
            payment_id=payment.payment_id,
            method=payment.method,
            due_at=now,
            deadline_at=now + deadline,
            sealed_token=event.sealed_token if event.method in NEEDS_TOKEN else None,
            amount_fen=payment.amount_fen,
        )
        return payment, Decision(changed=True, operations=[authorize])

    def confirm(self, now: datetime) -> Decision:
        """The order is confirmed: take the authorized money (a wallet's is taken already)."""
        if self.status is not PaymentStatus.AUTHORIZED or self.capturing:
            return Decision()
        self.capturing = True
        self.updated_at = now
        capture = self._operation(OperationKind.CAPTURE, now, amount_fen=self.amount_fen)
        return Decision(changed=True, operations=[capture])

    def cancel(self, reason: OrderEndReason, now: datetime) -> Decision:
        """The order ended after payment was requested: stop the authorization, release what is
        held, give back what was taken."""
        if self.order_ended is not None:
            return Decision()
        self.order_ended = reason
        decision = Decision(changed=True)
        match self.status:
            case PaymentStatus.REQUESTED | PaymentStatus.PENDING:
                # Nothing the order heard of is held; the void closes the payment at the provider
                # (which then refuses to authorize it), and finds any money the payer sent meanwhile.
                if self.status is PaymentStatus.REQUESTED:
                    decision.dropped.append(self.payment_id)
                self._move(PaymentStatus.VOIDED, now, reason)
                self.reason = reason
                decision.operations.append(
                    self._void(now, refund_reason=RefundReason.LATE_PAYMENT, detail=reason)
                )
            case PaymentStatus.AUTHORIZED:
                if self.capturing:
                    self.capturing = False
                    decision.dropped.append(self._key(OperationKind.CAPTURE))
                self._move(PaymentStatus.VOIDED, now, reason)
                self.reason = reason
                decision.operations.append(
                    self._void(now, announce=True, refund_reason=RefundReason.ORDER_ENDED, detail=reason)
                )
            case PaymentStatus.CAPTURED | PaymentStatus.REFUNDED:
                decision.operations.extend(self._give_back(RefundReason.ORDER_ENDED, reason, now))
            case PaymentStatus.FAILED | PaymentStatus.VOIDED:
                pass
        return decision

    def request_refund(self, event: RefundRequested, now: datetime) -> Decision:
        """Give back part or all of what was taken; raises RefundRefused past what is left."""
        if any(refund.refund_id == event.refund_id for refund in self.refunds):
            return Decision()
        if event.currency != self.currency:
            raise RefundRefused(
                f"refund {event.refund_id} is in {event.currency}; payment {self.payment_id} is in "
                f"{self.currency}"
            )
        left = self.refundable_fen
        if event.amount_fen > left:
            raise RefundRefused(
                f"refund {event.refund_id} asks {event.amount_fen} fen but payment {self.payment_id} has "
                f"{left} fen left to refund (captured {self.captured_fen}, refunded {self.refunded_fen})"
            )
        return Decision(
            changed=True,
            operations=[
                self._refund(event.refund_id, event.amount_fen, RefundReason.REQUESTED, event.reason, now)
            ],
        )

    @property
    def refundable_fen(self) -> int:
        """What may still be asked back: what was taken (or is being taken), less what was or is
        being refunded."""
        ceiling = self.amount_fen if self.capturing else self.captured_fen
        return max(0, ceiling - self._asked_back())

    # --- the provider's answers to our operations ----------------------------------------------

    def readiness(self, operation: Operation) -> Readiness:
        """Whether `operation` still has something to do, now."""
        match operation.kind:
            case OperationKind.AUTHORIZE:
                return Readiness.READY if self.status is PaymentStatus.REQUESTED else Readiness.SKIP
            case OperationKind.CAPTURE:
                return Readiness.READY if self.capturing else Readiness.SKIP
            case OperationKind.VOID:
                return Readiness.READY
            case OperationKind.REFUND:
                refund = self._pending_refund(operation.key)
                if refund is None:
                    return Readiness.SKIP
                if self.captured_fen - self.refunded_fen >= refund.amount_fen:
                    return Readiness.READY
                return Readiness.WAIT if self.capturing else Readiness.REFUSE

    def answered(self, operation: Operation, reply: ProviderReply, now: datetime) -> Decision:
        """Apply the provider's answer to `operation`."""
        match operation.kind:
            case OperationKind.AUTHORIZE:
                return self._authorize_answered(reply, now)
            case OperationKind.CAPTURE:
                return self._capture_answered(reply, now)
            case OperationKind.VOID:
                return self._void_answered(operation, reply, now)
            case OperationKind.REFUND:
                return self._refund_answered(operation.key, reply, now)

    def provider_timed_out(self, now: datetime) -> Decision:
        """No answer to the authorization within its deadline: fail it, and void in case the
        provider authorized after all (the void then releases it, or finds it captured and refunds)."""
        if self.status is not PaymentStatus.REQUESTED:
            return Decision()
        decision = self._fail(DeclineReason.PROVIDER_TIMEOUT, "no answer from the provider in time", now)
        decision.operations.append(self._void(now, refund_reason=RefundReason.LATE_PAYMENT))
        return decision

    def refuse_refund(self, refund_id: str, why: str, now: datetime) -> Decision:
        """A refund that cannot go through: recorded as refused, which frees its amount again."""
        refund = self._pending_refund(refund_id)
        if refund is None:
            return Decision()
        self._set_refund(replace(refund, state=RefundState.REFUSED))
        self._note(now, f"refund {refund_id} refused: {why}")
        return Decision(changed=True)

    def _authorize_answered(self, reply: ProviderReply, now: datetime) -> Decision:
        if self.status is not PaymentStatus.REQUESTED:
            # Cancelled or timed out meanwhile (a void is queued for whatever this answer holds), or
            # answered already through a callback.
            return Decision()
        match reply.outcome:
            case Outcome.AUTHORIZED | Outcome.CAPTURED if reply.provider_ref:
                return self._held(reply.outcome, reply.provider_ref, reply.amount_fen or self.amount_fen, now)
            case Outcome.PENDING if reply.action is not None:
                self.provider_ref = reply.provider_ref
                self.action = reply.action
                self._move(PaymentStatus.PENDING, now)
                return Decision(
                    changed=True,
                    events=[
                        PaymentPending(
                            order_id=self.order_id,
                            payment_id=self.payment_id,
                            method=self.method,
                            amount_fen=self.amount_fen,
                            currency=self.currency,
                            action_type=reply.action.type,
                            action_url=reply.action.url,
                        )
                    ],
                )
            case Outcome.DECLINED:
                return self._fail(*decline_reason(reply.decline_code, reply.message), now)
            case Outcome.AUTHORIZED | Outcome.CAPTURED | Outcome.PENDING:
                # Said yes without what we need to go on: fail, and release whatever it holds.
                decision = self._fail(
                    DeclineReason.PROVIDER_ERROR, f"{reply.outcome} without a reference or pay action", now
                )
                decision.operations.append(self._void(now, refund_reason=RefundReason.LATE_PAYMENT))
                return decision
            case _:
                return self._fail(
                    DeclineReason.PROVIDER_ERROR,
                    f"unexpected answer to an authorization: {reply.outcome}",
                    now,
                )

    def _capture_answered(self, reply: ProviderReply, now: datetime) -> Decision:
        if not self.capturing:
            return Decision()
        self.capturing = False
        if reply.outcome is not Outcome.CAPTURED:
            self._note(
                now, f"capture refused: {reply.outcome} {reply.decline_code or ''} {reply.message}".strip()
            )
            return Decision(changed=True)
        self.captured_fen = reply.amount_fen or self.amount_fen
        self._move(PaymentStatus.CAPTURED, now)
        return Decision(changed=True, events=[self._captured_event()])

    def _void_answered(self, operation: Operation, reply: ProviderReply, now: datetime) -> Decision:
        match reply.outcome:
            case Outcome.VOIDED | Outcome.NOT_FOUND:
                self._note(now, "released at the provider")
                if not operation.announce:
                    return Decision(changed=True)
                voided = PaymentVoided(
                    order_id=self.order_id,
                    payment_id=self.payment_id,
                    amount_fen=self.amount_fen,
                    currency=self.currency,
                    reason=self._end_reason(),
                    customer_id=self.customer_id,
                    late=operation.late,
                )
                return Decision(changed=True, events=[voided])
            case Outcome.CAPTURED:
                # The money was taken before the void arrived: it goes back as a refund instead.
                self.provider_ref = self.provider_ref or reply.provider_ref
                self.captured_fen = max(self.captured_fen, reply.amount_fen or self.amount_fen)
                reason = operation.refund_reason or RefundReason.ORDER_ENDED
                refunds = self._give_back(reason, operation.detail, now)
                self._note(now, "the void found the money taken")
                return Decision(changed=True, operations=refunds)
            case _:
                self._note(
                    now, f"void refused: {reply.outcome} {reply.decline_code or ''} {reply.message}".strip()
                )
                return Decision(changed=True)

    def _refund_answered(self, refund_id: str, reply: ProviderReply, now: datetime) -> Decision:
        refund = self._pending_refund(refund_id)
        if refund is None:
            return Decision()
        if reply.outcome is not Outcome.REFUNDED:
            why = f"{reply.outcome} {reply.decline_code or ''} {reply.message}".strip()
            return self.refuse_refund(refund_id, why, now)
        self._set_refund(replace(refund, state=RefundState.DONE))
        self.refunded_fen += refund.amount_fen
        # A payment that ended keeps saying so (FAILED, VOIDED); its timeline shows the money went back.
        self._move(
            PaymentStatus.REFUNDED,
            now,
            f"{refund.amount_fen} fen ({refund.reason})",
            keep_status=self.status in ENDED,
        )
        refunded = PaymentRefunded(
            order_id=self.order_id,
            payment_id=self.payment_id,
            refund_id=refund.refund_id,
            customer_id=self.customer_id,
            amount_fen=refund.amount_fen,
            refunded_total_fen=self.refunded_fen,
            captured_fen=self.captured_fen,
            currency=self.currency,
            reason=refund.reason,
            detail=refund.detail,
        )
        return Decision(changed=True, events=[refunded])

    # --- what the provider says on its own (callbacks, reconciliation) -----------------------------

    def notice(self, notice: Notice, now: datetime) -> Decision:
        """Apply a provider's notification: the payer paid or declined, possibly late, possibly the
        wrong amount. A resend, or news of a state already reached, decides nothing."""
        if notice.notification_id is not None and notice.notification_id in self.notices:
            return Decision()
        decision = self._noticed(notice, now)
        if decision.changed and notice.notification_id is not None:
            self.notices.append(notice.notification_id)
        return decision

    def _noticed(self, notice: Notice, now: datetime) -> Decision:
        money = notice.outcome in (Outcome.AUTHORIZED, Outcome.CAPTURED)
        if self.status in ENDED:
            return self._late(notice, now) if money else Decision()
        waiting = self.status in (PaymentStatus.REQUESTED, PaymentStatus.PENDING)
        stop_authorize = [self.payment_id] if self.status is PaymentStatus.REQUESTED else []
        if waiting and money and notice.amount_fen != self.amount_fen:
            decision = self._fail(
                DeclineReason.AMOUNT_MISMATCH,
                f"the provider was paid {notice.amount_fen} fen for {self.amount_fen} fen",
                now,
            )
            decision.dropped.extend(stop_authorize)
            give_back = self._late(notice, now, reason=RefundReason.ORDER_ENDED, detail="amount mismatch")
            decision.operations.extend(give_back.operations)
            return decision
        if waiting and money:
            decision = self._held(
                notice.outcome, notice.provider_ref or self.provider_ref, notice.amount_fen, now
            )
            decision.dropped.extend(stop_authorize)
            return decision
        if waiting and notice.outcome is Outcome.DECLINED:
            reason, detail = decline_reason(notice.decline_code, notice.message)
            if reason is DeclineReason.PROVIDER_DECLINED:
                reason = DeclineReason.PAYER_DECLINED
            decision = self._fail(reason, detail, now)
            decision.dropped.extend(stop_authorize)
            return decision
        if self.status is PaymentStatus.AUTHORIZED and notice.outcome is Outcome.CAPTURED:
            if self.capturing:
                self.capturing = False
                decision = Decision(dropped=[self._key(OperationKind.CAPTURE)])
            else:
                decision = Decision()
            self.captured_fen = notice.amount_fen
            self._move(PaymentStatus.CAPTURED, now)
            decision.changed = True
            decision.events.append(self._captured_event())
            return decision
        return Decision()

    def _late(
        self,
        notice: Notice,
        now: datetime,
        reason: RefundReason = RefundReason.LATE_PAYMENT,
        detail: str = "",
    ) -> Decision:
        """Money the provider holds or took for a payment that had ended: give it back, once."""
        if self.giving_back:
            return Decision()
        self.giving_back = True
        self.provider_ref = self.provider_ref or notice.provider_ref
        late = reason is RefundReason.LATE_PAYMENT
        self._note(now, f"{notice.outcome} {'after the payment ended' if late else 'for the wrong amount'}")
        if notice.outcome is Outcome.AUTHORIZED:
            operation = self._void(now, announce=late, late=late, refund_reason=reason, detail=detail)
            return Decision(changed=True, operations=[operation])
        self.captured_fen = max(self.captured_fen, notice.amount_fen)
        return Decision(changed=True, operations=self._give_back(reason, detail, now))

    # --- helpers -------------------------------------------------------------------------------

    def _held(self, outcome: Outcome, provider_ref: str | None, amount_fen: int, now: datetime) -> Decision:
        """The provider holds the money (AUTHORIZED) or took it (CAPTURED, a wallet)."""
        self.provider_ref = provider_ref
        events: list[Event] = [
            PaymentAuthorized(
                order_id=self.order_id,
                payment_id=self.payment_id,
                amount_fen=self.amount_fen,
                currency=self.currency,
                method=self.method,
                provider_ref=provider_ref or "",
            )
        ]
        self._move(PaymentStatus.AUTHORIZED, now)
        if outcome is Outcome.CAPTURED:
            self.captured_fen = amount_fen
            self._move(PaymentStatus.CAPTURED, now)
            events.append(self._captured_event())
        return Decision(changed=True, events=events)

    def _fail(self, reason: DeclineReason, detail: str, now: datetime) -> Decision:
        self.reason = reason
        self.detail = detail
        self._move(PaymentStatus.FAILED, now, reason)
        failed = PaymentFailed(
            order_id=self.order_id,
            payment_id=self.payment_id,
            method=self.method,
            reason=reason,
            detail=detail,
        )
        return Decision(changed=True, events=[failed])

    def _give_back(self, reason: RefundReason, detail: str, now: datetime) -> list[Operation]:
        """A refund of everything not yet refunded, once per payment (see auto_refund_id)."""
        refund_id = auto_refund_id(self.payment_id)
        left = self.captured_fen - self._asked_back()
        if left <= 0 or any(r.refund_id == refund_id for r in self.refunds):
            return []
        return [self._refund(refund_id, left, reason, detail, now)]

    def _refund(
        self, refund_id: str, amount_fen: int, reason: RefundReason, detail: str, now: datetime
    ) -> Operation:
        self.refunds.append(Refund(refund_id, amount_fen, reason, detail, RefundState.PENDING, now))
        return replace(self._operation(OperationKind.REFUND, now, amount_fen=amount_fen), key=refund_id)

    def _void(
        self,
        now: datetime,
        *,
        refund_reason: RefundReason,
        announce: bool = False,
        late: bool = False,
        detail: str = "",
    ) -> Operation:
        return replace(
            self._operation(OperationKind.VOID, now),
            announce=announce,
            late=late,
            refund_reason=refund_reason,
            detail=detail,
        )

    def _operation(self, kind: OperationKind, now: datetime, *, amount_fen: int = 0) -> Operation:
        return Operation(
            key=self._key(kind),
            kind=kind,
            payment_id=self.payment_id,
            method=self.method,
            due_at=now,
            amount_fen=amount_fen,
        )

    def _key(self, kind: OperationKind) -> str:
        return self.payment_id if kind is OperationKind.AUTHORIZE else f"{self.payment_id}:{kind}"

    def _captured_event(self) -> PaymentCaptured:
        return PaymentCaptured(
            order_id=self.order_id,
            payment_id=self.payment_id,
            amount_fen=self.captured_fen,
            currency=self.currency,
        )

    def _end_reason(self) -> OrderEndReason:
        """Why the payment's order ended (or will: a failed payment ends it)."""
        if self.order_ended is not None:
            return self.order_ended
        if self.reason is DeclineReason.PROVIDER_TIMEOUT:
            return OrderEndReason.PROVIDER_TIMEOUT
        return OrderEndReason.PAYMENT_DECLINED

    def _asked_back(self) -> int:
        """What was refunded or is being refunded."""
        return sum(r.amount_fen for r in self.refunds if r.state is not RefundState.REFUSED)

    def _pending_refund(self, refund_id: str) -> Refund | None:
        return next(
            (r for r in self.refunds if r.refund_id == refund_id and r.state is RefundState.PENDING), None
        )

    def _set_refund(self, refund: Refund) -> None:
        self.refunds = [refund if r.refund_id == refund.refund_id else r for r in self.refunds]

    def _move(
        self, status: PaymentStatus, now: datetime, note: str = "", *, keep_status: bool = False
    ) -> None:
        if not keep_status:
            self.status = status
        self.updated_at = now
        self.timeline.append(TimelineEntry(status, now, note))

    def _note(self, now: datetime, note: str) -> None:
        """A timeline entry that leaves the status as it is."""
        self.updated_at = now
        self.timeline.append(TimelineEntry(self.status, now, note))

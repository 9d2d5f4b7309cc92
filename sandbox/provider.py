"""What the sandbox provider does: its payments, ledger and idempotency keys, for all three methods.

Everything is in memory and forgotten on restart. One event loop runs it, so a step between two
awaits is atomic: each state change and its ledger entry happen together, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from sandbox.callbacks import Notifier, Sender
from sandbox.settings import SandboxSettings
from services.payment.protocol import (
    DEFAULT_MAX_SKEW_S,
    NOTICE_OUTCOMES,
    AuthorizeRequest,
    CallbackBody,
    CaptureRequest,
    ErrorCode,
    PaymentAnswer,
    RefundRequest,
    SignatureRejected,
    VoidRequest,
    WireAction,
    WireModel,
    verify_request,
)
from services.payment.providers import Outcome
from shared.clock import Clock, utc_now
from shared.contracts import PayActionType, PaymentMethod
from shared.logging import get_logger

log = get_logger(__name__)

TOK_APPROVE = "tok_approve"
TOK_TIMEOUT = "tok_timeout"
TOK_DELAY = "tok_delay"
TOK_FLAKY = "tok_flaky"
CARD_DECLINES: Mapping[str, tuple[str, str]] = {
    "tok_decline": ("CARD_DECLINED", "the issuer declined the card"),
    "tok_insufficient_funds": ("INSUFFICIENT_FUNDS", "insufficient funds"),
}
UNKNOWN_TOKEN = ("INVALID_TOKEN", "no such card token")
PAYER_DECLINED = ("PAYER_DECLINED", "the payer declined on the pay page")
PAYMENT_CLOSED = ("PAYMENT_CLOSED", "this payment id was closed before it was authorized")
REFUND_EXCEEDS_CAPTURED = "REFUND_EXCEEDS_CAPTURED"
CAPTURE_EXCEEDS_AUTHORIZED = "CAPTURE_EXCEEDS_AUTHORIZED"
# tok_flaky answers 503 this many times per payment id before it authorizes.
FLAKY_FAILURES = 2
WALLET_ACTIONS: Mapping[PaymentMethod, PayActionType] = {
    PaymentMethod.WECHAT_PAY: PayActionType.QR,
    PaymentMethod.ALIPAY: PayActionType.REDIRECT,
}


class ProviderFault(Exception):
    """A request the provider refuses (4xx) or cannot answer (5xx)."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Operation(StrEnum):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class LedgerEntry(BaseModel):
    """One operation the provider performed (or declined), recorded once."""

    seq: int
    at: datetime
    method: PaymentMethod
    operation: Operation
    payment_id: str
    provider_ref: str | None
    amount_fen: int
    idempotency_key: str
    outcome: Outcome


@dataclass(eq=False)
class Payment:
    method: PaymentMethod
    payment_id: str
    provider_ref: str | None
    amount_fen: int
    notify_url: str
    idempotency_key: str
    status: Outcome
    description: str = ""
    held_fen: int = 0
    captured_fen: int = 0
    refunded_fen: int = 0
    decline_code: str | None = None
    message: str = ""
    # What the first authorize answered: every repeat answers it again.
    authorize_answer: PaymentAnswer | None = None
    # Set once no authorization is in progress (only tok_delay keeps it unset for a while).
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_wallet(self) -> bool:
        return self.method in WALLET_ACTIONS


@dataclass
class _KeyUse:
    fingerprint: str
    answer: PaymentAnswer | None = None


class Sandbox:
    def __init__(self, settings: SandboxSettings, send: Sender, clock: Clock = utc_now) -> None:
        self.settings = settings
        self._clock = clock
        self.notifier = Notifier(
            credentials=settings.credentials,
            send=send,
            attempts=settings.sandbox_callback_attempts,
            backoff_s=settings.sandbox_callback_backoff_s,
            clock=clock,
        )
        self._payments: dict[str, Payment] = {}
        self._by_ref: dict[str, Payment] = {}
        self._refunds: dict[str, PaymentAnswer] = {}
        self._key_uses: dict[tuple[PaymentMethod, str], _KeyUse] = {}
        self._flaky_failures: dict[str, int] = {}
        self._nonces: set[tuple[str, str]] = set()
        self._nonce_arrivals: deque[tuple[float, tuple[str, str]]] = deque()
        self._ledger: list[LedgerEntry] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    # --- requests ------------------------------------------------------------------------------

    def check_signature(
        self, method: PaymentMethod, headers: Mapping[str, str], http_method: str, path: str, body: bytes
    ) -> None:
        """A request signed with the method's API key, fresh, and not seen before; else 401."""
        now = self._clock()
        try:
            signed = verify_request(
                headers, self.settings.credentials(method), http_method, path, body, now=now
            )
        except SignatureRejected as refused:
            raise ProviderFault(401, ErrorCode.INVALID_SIGNATURE, refused.reason) from None
        # A nonce accepted at `at` could only be replayed until `at` + 2 skews (its timestamp was
        # within a skew of `at`, a replay's must be within a skew of the replay's arrival).
        horizon = now.timestamp() - 2 * DEFAULT_MAX_SKEW_S
        while self._nonce_arrivals and self._nonce_arrivals[0][0] < horizon:
            self._nonces.discard(self._nonce_arrivals.popleft()[1])
        seen = (signed.merchant_id, signed.nonce)
        if seen in self._nonces:
            raise ProviderFault(401, ErrorCode.INVALID_SIGNATURE, "replayed nonce")
        self._nonces.add(seen)
        self._nonce_arrivals.append((now.timestamp(), seen))

    async def once(
        self,
        method: PaymentMethod,
        idempotency_key: str | None,
        path: str,
        request: WireModel,
        run: Callable[[str], Awaitable[PaymentAnswer]],
    ) -> PaymentAnswer:
        """Run a money call once per idempotency key: a repeat gets the first answer; the same key
        with another request is refused. A failed call (a fault, a 5xx) leaves the key unused."""
        if not idempotency_key:
            raise ProviderFault(
                400, ErrorCode.IDEMPOTENCY_KEY_REQUIRED, "money calls need an Idempotency-Key"
            )
        fingerprint = hashlib.sha256(f"{path}\n{request.model_dump_json()}".encode()).hexdigest()
        slot = (method, idempotency_key)
        use = self._key_uses.setdefault(slot, _KeyUse(fingerprint))
        if use.fingerprint != fingerprint:
            raise ProviderFault(
                409, ErrorCode.IDEMPOTENCY_KEY_REUSED, "this Idempotency-Key was used for another request"
            )
        if use.answer is not None:
            return use.answer
        try:
            use.answer = await run(idempotency_key)
            return use.answer
        finally:
            if use.answer is None and self._key_uses.get(slot) is use:
                del self._key_uses[slot]

    async def authorize(self, method: PaymentMethod, request: AuthorizeRequest, key: str) -> PaymentAnswer:
        existing = self._payments.get(request.payment_id)
        if existing is not None:
            self._same_method(existing, method)
            return await self._first_answer(existing, request.amount_fen, key)
        token = request.token or ""
        if method in WALLET_ACTIONS and not request.notify_url:
            raise ProviderFault(400, ErrorCode.INVALID_REQUEST, "notify_url: a wallet payment needs one")
        if method is PaymentMethod.BANK_CARD:
            if token == TOK_TIMEOUT:
                await self._hold()
            if token == TOK_FLAKY and self._flaky_failures.get(request.payment_id, 0) < FLAKY_FAILURES:
                self._flaky_failures[request.payment_id] = self._flaky_failures.get(request.payment_id, 0) + 1
                log.info("flaky_unavailable", method=method.value, payment_id=request.payment_id)
                raise ProviderFault(503, ErrorCode.UNAVAILABLE, "temporarily unavailable; try again")
        payment = Payment(
            method=method,
            payment_id=request.payment_id,
            provider_ref=f"sbx_{method.value}_{uuid.uuid4().hex[:20]}",
            amount_fen=request.amount_fen,
            notify_url=request.notify_url,
            idempotency_key=key,
            status=Outcome.PENDING,
            description=request.description,
        )
        self._store(payment)
        if payment.is_wallet:
            payment.authorize_answer = self._answer(payment)
            payment.settled.set()
            log.info("awaiting_payer", method=method.value, payment_id=payment.payment_id)
            return payment.authorize_answer
        if token == TOK_DELAY:
            self._spawn(self._authorize_later(payment))
            return await self._first_answer(payment, request.amount_fen, key)
        return self._settle_card(payment, token)

    async def capture(
        self, method: PaymentMethod, payment_id: str, request: CaptureRequest, key: str
    ) -> PaymentAnswer:
        payment = await self._settled(method, payment_id)
        self._same_ref(payment, request.provider_ref)
        if payment.status is Outcome.CAPTURED:
            return self._answer(payment)
        if payment.status is not Outcome.AUTHORIZED:
            raise ProviderFault(
                409, ErrorCode.INVALID_STATE, f"a {payment.status} payment cannot be captured"
            )
        if request.amount_fen > payment.held_fen:
            self._record(payment, Operation.CAPTURE, request.amount_fen, key, Outcome.DECLINED)
            return self._answer(
                payment,
                outcome=Outcome.DECLINED,
                decline_code=CAPTURE_EXCEEDS_AUTHORIZED,
                message=f"{payment.held_fen} fen are authorized",
            )
        payment.status, payment.captured_fen, payment.held_fen = Outcome.CAPTURED, request.amount_fen, 0
        self._record(payment, Operation.CAPTURE, request.amount_fen, key, Outcome.CAPTURED)
        return self._answer(payment)

    async def void(
        self, method: PaymentMethod, payment_id: str, request: VoidRequest, key: str
    ) -> PaymentAnswer:
        payment = self._payments.get(payment_id)
        if payment is None:
            # Nothing held: close the id, so an authorization still on its way is declined.
            payment = Payment(
                method=method,
                payment_id=payment_id,
                provider_ref=None,
                amount_fen=0,
                notify_url="",
                idempotency_key=key,
                status=Outcome.VOIDED,
            )
            payment.settled.set()
            self._store(payment)
            self._record(payment, Operation.VOID, 0, key, Outcome.VOIDED)
            return self._answer(payment)
        self._same_method(payment, method)
        await payment.settled.wait()
        if request.provider_ref is not None:
            self._same_ref(payment, request.provider_ref)
        if payment.status in (Outcome.AUTHORIZED, Outcome.PENDING):
            released = payment.held_fen
            payment.status, payment.held_fen = Outcome.VOIDED, 0
            self._record(payment, Operation.VOID, released, key, Outcome.VOIDED)
            return self._answer(payment, amount_fen=released)
        if payment.status is Outcome.DECLINED:
            return self._answer(payment, outcome=Outcome.VOIDED, amount_fen=0)
        return self._answer(payment)  # CAPTURED (refund it instead) or already VOIDED

    async def refund(self, method: PaymentMethod, request: RefundRequest, key: str) -> PaymentAnswer:
        done = self._refunds.get(request.refund_id)
        if done is not None:
            if done.payment_id != request.payment_id:
                raise ProviderFault(409, ErrorCode.INVALID_STATE, "this refund id belongs to another payment")
            return done
        payment = await self._settled(method, request.payment_id)
        self._same_ref(payment, request.provider_ref)
        refundable = payment.captured_fen - payment.refunded_fen
        if request.amount_fen > refundable:
            self._record(payment, Operation.REFUND, request.amount_fen, key, Outcome.DECLINED)
            answer = self._answer(
                payment,
                outcome=Outcome.DECLINED,
                amount_fen=request.amount_fen,
                decline_code=REFUND_EXCEEDS_CAPTURED,
                message=f"{refundable} fen can still be refunded",
                refund_id=request.refund_id,
            )
        else:
            payment.refunded_fen += request.amount_fen
            self._record(payment, Operation.REFUND, request.amount_fen, key, Outcome.REFUNDED)
            answer = self._answer(
                payment, outcome=Outcome.REFUNDED, amount_fen=request.amount_fen, refund_id=request.refund_id
            )
        self._refunds[request.refund_id] = answer
        return answer

    async def query(self, method: PaymentMethod, payment_id: str) -> PaymentAnswer:
        return self._answer(await self._settled(method, payment_id))

    # --- the payer and the test hooks ----------------------------------------------------------

    def payment(self, payment_id: str) -> Payment:
        payment = self._payments.get(payment_id)
        if payment is None:
            raise ProviderFault(404, ErrorCode.NOT_FOUND, "no such payment")
        return payment

    def payment_by_ref(self, provider_ref: str) -> Payment | None:
        return self._by_ref.get(provider_ref)

    def decide(
        self, payment: Payment, *, approve: bool, callbacks: int, force: bool = False
    ) -> PaymentAnswer:
        """The payer pays or declines on the provider's page; `callbacks` notices follow in the
        background. `force` pays a payment already closed, as a payer who paid just before the close."""
        if not payment.is_wallet or payment.provider_ref is None:
            raise ProviderFault(409, ErrorCode.INVALID_STATE, "no payer is waiting on this payment")
        if payment.status is Outcome.VOIDED and not force:
            raise ProviderFault(409, ErrorCode.INVALID_STATE, "this payment was closed")
        if payment.status not in (Outcome.PENDING, Outcome.VOIDED):
            raise ProviderFault(409, ErrorCode.INVALID_STATE, f"this payment is already {payment.status}")
        if approve:
            payment.status, payment.captured_fen = Outcome.CAPTURED, payment.amount_fen
        else:
            payment.status = Outcome.DECLINED
            payment.decline_code, payment.message = PAYER_DECLINED
        self._record(
            payment, Operation.AUTHORIZE, payment.amount_fen, payment.idempotency_key, payment.status
        )
        if callbacks:
            self._spawn(self._deliver(payment, self._notice(payment, payment.provider_ref), callbacks))
        return self._answer(payment)

    async def notify_now(self, payment: Payment, times: int, timestamp_offset_s: float) -> list[int | None]:
        """Send the payment's current notice now, once per `times`, with no retry."""
        if payment.status not in NOTICE_OUTCOMES or payment.provider_ref is None or not payment.notify_url:
            raise ProviderFault(
                409, ErrorCode.INVALID_STATE, f"a {payment.status} payment has nothing to notify"
            )
        notice = self._notice(payment, payment.provider_ref)
        return [
            await self.notifier.deliver_once(payment.method, payment.notify_url, notice, timestamp_offset_s)
            for _ in range(times)
        ]

    def ledger(self, payment_id: str | None = None) -> list[LedgerEntry]:
        return [entry for entry in self._ledger if payment_id is None or entry.payment_id == payment_id]

    async def close(self) -> None:
        """Release held requests and stop deliveries still in progress (shutdown)."""
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- inside --------------------------------------------------------------------------------

    def _store(self, payment: Payment) -> None:
        self._payments[payment.payment_id] = payment
        if payment.provider_ref is not None:
            self._by_ref[payment.provider_ref] = payment

    async def _settled(self, method: PaymentMethod, payment_id: str) -> Payment:
        payment = self._payments.get(payment_id)
        if payment is None or payment.method is not method:
            raise ProviderFault(404, ErrorCode.NOT_FOUND, "no such payment")
        await payment.settled.wait()
        return payment

    def _same_method(self, payment: Payment, method: PaymentMethod) -> None:
        if payment.method is not method:
            raise ProviderFault(409, ErrorCode.INVALID_STATE, "this payment id belongs to another method")

    def _same_ref(self, payment: Payment, provider_ref: str) -> None:
        if payment.provider_ref != provider_ref:
            raise ProviderFault(409, ErrorCode.INVALID_STATE, "provider_ref is not this payment's")

    async def _hold(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.settings.sandbox_timeout_hold_s)
        raise ProviderFault(504, ErrorCode.TIMEOUT, "the issuer never answered")

    async def _first_answer(self, payment: Payment, amount_fen: int, key: str) -> PaymentAnswer:
        """What the payment's first authorize answered, once it is known (tok_delay takes a while)."""
        await payment.settled.wait()
        if payment.authorize_answer is None:
            # Voided before anything was authorized: the id stays closed.
            payment.authorize_answer = self._decline_closed(payment, amount_fen, key)
        return payment.authorize_answer

    async def _authorize_later(self, payment: Payment) -> None:
        await asyncio.sleep(self.settings.sandbox_delay_s)
        self._settle_card(payment, TOK_DELAY)

    def _settle_card(self, payment: Payment, token: str) -> PaymentAnswer:
        if token in (TOK_APPROVE, TOK_DELAY, TOK_FLAKY):
            payment.status, payment.held_fen = Outcome.AUTHORIZED, payment.amount_fen
        else:
            payment.status = Outcome.DECLINED
            payment.decline_code, payment.message = CARD_DECLINES.get(token, UNKNOWN_TOKEN)
        self._record(
            payment, Operation.AUTHORIZE, payment.amount_fen, payment.idempotency_key, payment.status
        )
        payment.authorize_answer = self._answer(payment)
        payment.settled.set()
        return payment.authorize_answer

    async def _deliver(self, payment: Payment, notice: CallbackBody, times: int) -> None:
        # One after the other: a duplicate arrives after the first, as a provider's resend does.
        for _ in range(times):
            await self.notifier.deliver(payment.method, payment.notify_url, notice)

    def _decline_closed(self, payment: Payment, amount_fen: int, key: str) -> PaymentAnswer:
        self._record(payment, Operation.AUTHORIZE, amount_fen, key, Outcome.DECLINED)
        code, message = PAYMENT_CLOSED
        return self._answer(
            payment, outcome=Outcome.DECLINED, amount_fen=amount_fen, decline_code=code, message=message
        )

    def _answer(self, payment: Payment, **overrides: Any) -> PaymentAnswer:
        """The payment as it stands, or an operation's answer about it (`overrides`)."""
        action = None
        if payment.status is Outcome.PENDING and payment.is_wallet and payment.provider_ref is not None:
            url = f"{self.settings.public_url}/pay/{payment.provider_ref}"
            action = WireAction(type=WALLET_ACTIONS[payment.method], url=url)
        amounts = {Outcome.AUTHORIZED: payment.held_fen, Outcome.CAPTURED: payment.captured_fen}
        fields: dict[str, Any] = {
            "payment_id": payment.payment_id,
            "outcome": payment.status,
            "provider_ref": payment.provider_ref,
            "action": action,
            "amount_fen": amounts.get(payment.status, payment.amount_fen),
            "decline_code": payment.decline_code,
            "message": payment.message,
        }
        return PaymentAnswer(**(fields | overrides))

    def _notice(self, payment: Payment, provider_ref: str) -> CallbackBody:
        return CallbackBody(
            # The same on every resend of this state's notice, new when the state changes; opaque, as
            # a real provider's, so that the receiver can keep it without keeping the reference.
            notification_id=f"ntf_{hashlib.sha256(f'{provider_ref}:{payment.status}'.encode()).hexdigest()[:32]}",
            payment_id=payment.payment_id,
            provider_ref=provider_ref,
            outcome=payment.status,
            amount_fen=payment.captured_fen if payment.status is Outcome.CAPTURED else payment.amount_fen,
            decline_code=payment.decline_code,
            message=payment.message,
        )

    def _record(
        self, payment: Payment, operation: Operation, amount_fen: int, key: str, outcome: Outcome
    ) -> None:
        entry = LedgerEntry(
            seq=len(self._ledger) + 1,
            at=self._clock(),
            method=payment.method,
            operation=operation,
            payment_id=payment.payment_id,
            provider_ref=payment.provider_ref,
            amount_fen=amount_fen,
            idempotency_key=key,
            outcome=outcome,
        )
        self._ledger.append(entry)
        log.info(
            "performed",
            method=payment.method.value,
            payment_id=payment.payment_id,
            operation=operation,
            outcome=outcome,
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

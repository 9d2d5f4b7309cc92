"""A scripted payment provider and a small world (twin store, clock, token keys) for the payment
service's handler, worker and API tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from services.payment.domain import Operation, payment_id_for
from services.payment.handlers import PaymentPolicy, PaymentService, handle_batch
from services.payment.protocol import BAD_SIGNATURE, STALE_TIMESTAMP
from services.payment.providers import (
    CallbackNotice,
    InvalidCallback,
    Outcome,
    PayAction,
    PaymentProvider,
    ProviderAnswer,
    ProviderUnavailable,
)
from services.payment.worker import run_operation
from shared.contracts import Envelope, Event, OrderEvent, PayActionType, PaymentMethod, PaymentRequested
from shared.crypto import TokenOpener, TokenSealer, generate_token_keypair
from shared.kafka import Delivery, new_envelope
from tests.twins.payment import InMemoryPaymentStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
CALLBACK_BASE = "https://payments.example"
PROVIDER_TOKEN = "tok_approve"  # noqa: S105 - a sandbox token, not a secret
_PRIVATE, _PUBLIC = generate_token_keypair()
SEALER = TokenSealer(_PUBLIC)
WALLET_URL = "https://pay.example/qr"


Scripted = ProviderAnswer | Exception


@dataclass
class Call:
    operation: str
    key: str
    token: str | None = None
    notify_url: str | None = None
    amount_fen: int | None = None


@dataclass
class FakeProvider:
    """Answers like a well-behaved provider (idempotent per key) unless told otherwise: `script` holds,
    per operation, answers or exceptions to give first, in order. With `gate` set, every call waits
    for it; `in_flight`/`max_in_flight` count calls at once."""

    method: PaymentMethod
    captures_on_authorize: bool = False
    calls: list[Call] = field(default_factory=list)
    script: dict[str, list[Scripted]] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    in_flight: int = 0
    max_in_flight: int = 0

    async def authorize(
        self,
        payment_id: str,
        amount_fen: int,
        currency: str,
        token: str | None,
        notify_url: str,
        description: str,
    ) -> ProviderAnswer:
        if self.captures_on_authorize:
            action = PayAction(PayActionType.QR, f"{WALLET_URL}/{payment_id}")
            usual = ProviderAnswer(Outcome.PENDING, provider_ref=f"ref-{payment_id}", action=action)
        else:
            usual = ProviderAnswer(
                Outcome.AUTHORIZED, provider_ref=f"ref-{payment_id}", amount_fen=amount_fen
            )
        return await self._answer(Call("authorize", payment_id, token, notify_url, amount_fen), usual)

    async def capture(self, payment_id: str, provider_ref: str, amount_fen: int) -> ProviderAnswer:
        usual = ProviderAnswer(Outcome.CAPTURED, provider_ref=provider_ref, amount_fen=amount_fen)
        return await self._answer(Call("capture", f"{payment_id}:capture", amount_fen=amount_fen), usual)

    async def void(self, payment_id: str, provider_ref: str | None) -> ProviderAnswer:
        return await self._answer(Call("void", f"{payment_id}:void"), ProviderAnswer(Outcome.VOIDED))

    async def refund(
        self, refund_id: str, payment_id: str, provider_ref: str, amount_fen: int
    ) -> ProviderAnswer:
        usual = ProviderAnswer(Outcome.REFUNDED, provider_ref=provider_ref, amount_fen=amount_fen)
        return await self._answer(Call("refund", refund_id, amount_fen=amount_fen), usual)

    async def query(self, payment_id: str) -> ProviderAnswer:
        return await self._answer(Call("query", payment_id), ProviderAnswer(Outcome.PENDING))

    def verify_callback(self, headers: Mapping[str, str], body: bytes, now: datetime) -> CallbackNotice:
        """A stand-in for the signature check: `x-signature: good` and an `x-sent-at` within a minute."""
        if headers.get("x-signature") != "good":
            raise InvalidCallback(BAD_SIGNATURE)
        sent_at = datetime.fromisoformat(headers["x-sent-at"])
        if abs((now - sent_at).total_seconds()) > 60:
            raise InvalidCallback(STALE_TIMESTAMP)
        data = json.loads(body)
        return CallbackNotice(
            notification_id=data["notification_id"],
            nonce=headers["x-nonce"],
            sent_at=sent_at,
            payment_id=data["payment_id"],
            provider_ref=data["provider_ref"],
            outcome=Outcome(data["outcome"]),
            amount_fen=data["amount_fen"],
            decline_code=data.get("decline_code"),
        )

    def made(self, operation: str) -> list[str]:
        """The idempotency keys of the calls made for `operation`, in order."""
        return [call.key for call in self.calls if call.operation == operation]

    async def _answer(self, call: Call, usual: ProviderAnswer) -> ProviderAnswer:
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            scripted = self.script.get(call.operation)
            answer = scripted.pop(0) if scripted else usual
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.in_flight -= 1


def unavailable() -> ProviderUnavailable:
    return ProviderUnavailable("no answer within 5 s")


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@dataclass
class World:
    store: InMemoryPaymentStore
    providers: dict[PaymentMethod, FakeProvider]
    service: PaymentService
    clock: Clock
    offset: int = 0

    @property
    def card(self) -> FakeProvider:
        return self.providers[PaymentMethod.BANK_CARD]

    @property
    def alipay(self) -> FakeProvider:
        return self.providers[PaymentMethod.ALIPAY]

    def deliver(self, event: Event, envelope: Envelope | None = None) -> Delivery:
        assert isinstance(event, OrderEvent)
        envelope = envelope or new_envelope(event, source="order", correlation_id=f"corr-{event.order_id}")
        self.offset += 1
        return Delivery(envelope, event, "order.events", 0, self.offset)

    async def handle(self, *events: Event) -> list[Envelope]:
        """Consume one batch of these events; the events it emitted."""
        before = len(self.store.outbox)
        await handle_batch(self.service, [self.deliver(e) for e in events])
        return self.store.outbox[before:]

    async def drain(self, owner: str = "worker-a") -> list[Envelope]:
        """Run, one at a time, the operations due now until none is; the events they emitted."""
        before = len(self.store.outbox)
        while claimed := await self.store.claim_operations(self.clock(), owner, LEASE, limit=100):
            for operation in claimed:
                await run_operation(self.service, operation)
        return self.store.outbox[before:]

    def queued(self) -> list[Operation]:
        return sorted(self.store.queued.values(), key=lambda op: op.key)


def make_world() -> World:
    store = InMemoryPaymentStore()
    clock = Clock()
    providers = {
        method: FakeProvider(method, captures_on_authorize=method is not PaymentMethod.BANK_CARD)
        for method in PaymentMethod
    }
    as_protocol: dict[PaymentMethod, PaymentProvider] = dict(providers)
    service = PaymentService(
        store=store,
        providers=as_protocol,
        opener=TokenOpener(SecretStr(_PRIVATE)),
        policy=PaymentPolicy(
            deadline=timedelta(seconds=30), max_backoff=timedelta(seconds=60), callback_base_url=CALLBACK_BASE
        ),
        clock=clock,
        jitter=lambda: 0.5,
    )
    return World(store, providers, service, clock)


def card_request(
    order_id: str = "ord-1", amount_fen: int = 9_900, sealed: str | None = None
) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id,
        customer_id="cus-1",
        amount_fen=amount_fen,
        method=PaymentMethod.BANK_CARD,
        sealed_token=SEALER.seal(PROVIDER_TOKEN) if sealed is None else sealed,
    )


def wallet_request(order_id: str = "ord-1", method: PaymentMethod = PaymentMethod.ALIPAY) -> PaymentRequested:
    return PaymentRequested(order_id=order_id, customer_id="cus-1", amount_fen=9_900, method=method)


def types(envelopes: list[Envelope]) -> list[str]:
    return [envelope.type for envelope in envelopes]


def pay(order_id: str = "ord-1") -> str:
    return payment_id_for(order_id)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll `condition`, yielding to the loop, until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition did not hold within {timeout_s} s")
        await asyncio.sleep(0.001)

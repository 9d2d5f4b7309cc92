"""What the payment service asks of a payment provider, whatever the method: the adapter interface.

The adapters (services/payment/adapters.py) speak HTTP to a provider; the sandbox provider
(`python -m sandbox`) plays all of them locally. Answers are in the domain's terms (Outcome,
PayAction, ProviderReply), so the rules read them as they come.

Every call that moves money carries an idempotency key (the payment id, `<payment id>:capture`,
`<payment id>:void`, the refund id), so repeating a call after a timeout or a restart moves the
money once. An adapter raises `ProviderUnavailable` for anything worth retrying (no answer in
time, a connection error, a 5xx or 429); a decline is an answer, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.payment.domain import Outcome, PayAction, ProviderReply
from shared.contracts import PaymentMethod

__all__ = [
    "CallbackNotice",
    "InvalidCallback",
    "Outcome",
    "PayAction",
    "PaymentProvider",
    "ProviderAnswer",
    "ProviderUnavailable",
    "Providers",
]


class ProviderUnavailable(Exception):
    """The provider did not answer usefully (timeout, connection, 5xx, 429): try again later."""


class InvalidCallback(Exception):
    """A callback that is not the provider's: a bad signature, a stale timestamp, a malformed body."""


# A provider's answer to one call, in the rules' own terms (services.payment.domain).
ProviderAnswer = ProviderReply


@dataclass(frozen=True)
class CallbackNotice:
    """A provider's signed notification, verified: what happened to which payment."""

    notification_id: str  # the same on every resend of one notification
    nonce: str  # new on every delivery: a second delivery with the same nonce is a replay
    sent_at: datetime
    payment_id: str
    provider_ref: str
    outcome: Outcome  # AUTHORIZED, CAPTURED or DECLINED
    amount_fen: int
    decline_code: str | None = None
    message: str = ""


class PaymentProvider(Protocol):
    method: PaymentMethod
    # Wallets take the money when the payer pays; a card's authorization waits for capture.
    captures_on_authorize: bool

    async def authorize(
        self,
        payment_id: str,
        amount_fen: int,
        currency: str,
        token: str | None,
        notify_url: str,
        description: str,
    ) -> ProviderAnswer:
        """AUTHORIZED or DECLINED for a card; PENDING with an action for a wallet. `payment_id` is the
        idempotency key: the same call again returns the first answer (or the state it led to)."""
        ...

    async def capture(self, payment_id: str, provider_ref: str, amount_fen: int) -> ProviderAnswer:
        """CAPTURED (also when it already was)."""
        ...

    async def void(self, payment_id: str, provider_ref: str | None) -> ProviderAnswer:
        """Release an authorization or close a payment the payer has not paid: VOIDED (also when
        nothing was held, and from then on the provider refuses to authorize this payment id), or
        CAPTURED when the money was already taken, which needs a refund instead."""
        ...

    async def refund(
        self, refund_id: str, payment_id: str, provider_ref: str, amount_fen: int
    ) -> ProviderAnswer:
        """REFUNDED; `refund_id` is the idempotency key. DECLINED when it would exceed what was taken."""
        ...

    async def query(self, payment_id: str) -> ProviderAnswer:
        """Where the payment stands at the provider (NOT_FOUND when it never reached it)."""
        ...

    def verify_callback(self, headers: Mapping[str, str], body: bytes, now: datetime) -> CallbackNotice:
        """The notice in a callback whose signature is good and whose timestamp is fresh; raises
        InvalidCallback otherwise. Nonce replay is the caller's to check: it needs a durable record."""
        ...


Providers = Mapping[PaymentMethod, PaymentProvider]

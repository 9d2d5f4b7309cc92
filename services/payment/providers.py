"""Provider adapters: one per payment method, behind the `PaymentProvider` protocol.

Only sandbox adapters exist. The protocol takes the answer to an authorization from the call
itself; a provider that confirms later through a callback (as WeChat Pay and Alipay do) does not fit
it as it stands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from services.payment.domain import ProviderResult
from shared.contracts import DeclineReason, PaymentMethod


class PaymentProvider(Protocol):
    async def authorize(self, payment_id: str, amount_fen: int, currency: str, token: str) -> ProviderResult:
        """Hold the amount; `payment_id` is the idempotency key, so a repeated call charges once.

        Raises on a transport failure (the caller retries): a decline is a result, not an error.
        """
        ...

    async def void(self, payment_id: str, provider_ref: str) -> None:
        """Release an authorization; releasing one twice is not an error."""
        ...


Providers = Mapping[PaymentMethod, PaymentProvider]

# The sandbox's public contract (see the README): these tokens decide the answer.
SANDBOX_APPROVE = "tok_approve"
SANDBOX_DECLINES = {
    "tok_decline": DeclineReason.CARD_DECLINED.value,
    "tok_insufficient_funds": DeclineReason.INSUFFICIENT_FUNDS.value,
}


class SandboxProvider:
    """A stand-in provider for one method that answers from the token alone.

    Its answers depend only on (payment_id, token), so a repeated call gives the same answer and
    the same reference, as a real provider's idempotency key would.
    """

    def __init__(self, method: PaymentMethod) -> None:
        self.method = method

    async def authorize(
        self,
        payment_id: str,
        amount_fen: int,  # noqa: ARG002 - the sandbox answers from the token alone
        currency: str,  # noqa: ARG002
        token: str,
    ) -> ProviderResult:
        if token == SANDBOX_APPROVE:
            return ProviderResult(approved=True, provider_ref=self._reference(payment_id))
        code = SANDBOX_DECLINES.get(token, DeclineReason.INVALID_TOKEN.value)
        return ProviderResult(approved=False, decline_code=code, message=f"sandbox {self.method.value}")

    async def void(self, payment_id: str, provider_ref: str) -> None:  # noqa: ARG002 - nothing is held
        return None

    def _reference(self, payment_id: str) -> str:
        digest = hashlib.sha256(f"{self.method.value}:{payment_id}".encode()).hexdigest()[:24]
        return f"sbx_{self.method.value}_{digest}"


def sandbox_providers() -> dict[PaymentMethod, PaymentProvider]:
    """Every method served by the sandbox, as in dev and tests."""
    return {method: SandboxProvider(method) for method in PaymentMethod}

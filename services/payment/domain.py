"""Payments as pure rules: what a provider's answer means, and when an authorization may be voided.

No I/O here: handlers call the providers, hand the answers to these functions and store the result.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from shared.contracts import (
    DeclineReason,
    Event,
    OrderEndReason,
    PaymentAuthorized,
    PaymentFailed,
    PaymentMethod,
    PaymentRequested,
    PaymentVoided,
)

# Fixed forever: payment ids derived from it are stored and sent to providers as idempotency keys.
_PAYMENT_ID_NAMESPACE = uuid.UUID("3f6c1f0e-5b7a-4d2e-9a41-8c0d2b6e7f15")


def payment_id_for(order_id: str) -> str:
    """One payment per order, with the same id on every redelivery, so a provider never charges twice."""
    return f"pay_{uuid.uuid5(_PAYMENT_ID_NAMESPACE, order_id).hex}"


class PaymentStatus(StrEnum):
    AUTHORIZED = "authorized"
    FAILED = "failed"
    VOIDED = "voided"


@dataclass(frozen=True)
class ProviderResult:
    """A provider's answer to an authorization, in the provider's own terms."""

    approved: bool
    provider_ref: str | None = None
    decline_code: str | None = None
    message: str = ""


@dataclass(frozen=True)
class TimelineEntry:
    status: PaymentStatus
    at: datetime
    note: str = ""


@dataclass
class Payment:
    payment_id: str
    order_id: str
    customer_id: str
    method: PaymentMethod
    amount_fen: int
    currency: str
    status: PaymentStatus
    provider_ref: str | None
    # Why it failed (a provider's decline) or why it was voided (why its order ended).
    reason: DeclineReason | OrderEndReason | None
    detail: str
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineEntry] = field(default_factory=list)
    # Bumped on every stored change; the store writes only over the version it read.
    version: int = 0

    @classmethod
    def authorize(
        cls, request: PaymentRequested, result: ProviderResult, now: datetime
    ) -> tuple[Payment, Event]:
        """The payment a provider's answer creates, and the event that tells the order service."""
        payment_id = payment_id_for(request.order_id)
        status, reason, detail = _interpret(result)
        payment = cls(
            payment_id=payment_id,
            order_id=request.order_id,
            customer_id=request.customer_id,
            method=request.method,
            amount_fen=request.amount_fen,
            currency=request.currency,
            status=status,
            provider_ref=result.provider_ref,
            reason=reason,
            detail=detail,
            created_at=now,
            updated_at=now,
            timeline=[TimelineEntry(status, now, reason or "")],
        )
        event: Event
        if payment.status is PaymentStatus.AUTHORIZED and payment.provider_ref is not None:
            event = PaymentAuthorized(
                order_id=payment.order_id,
                payment_id=payment_id,
                amount_fen=payment.amount_fen,
                currency=payment.currency,
                method=payment.method,
                provider_ref=payment.provider_ref,
            )
        else:
            event = PaymentFailed(
                order_id=payment.order_id,
                payment_id=payment_id,
                method=payment.method,
                reason=reason or DeclineReason.PROVIDER_ERROR,
                detail=detail,
            )
        return payment, event

    def void(self, reason: OrderEndReason, now: datetime) -> list[Event]:
        """Release the authorization of a cancelled order; only an authorized payment has one."""
        if self.status is not PaymentStatus.AUTHORIZED:
            return []
        self.status = PaymentStatus.VOIDED
        self.reason = reason
        self.updated_at = now
        self.timeline.append(TimelineEntry(PaymentStatus.VOIDED, now, reason))
        return [
            PaymentVoided(
                order_id=self.order_id,
                payment_id=self.payment_id,
                amount_fen=self.amount_fen,
                currency=self.currency,
                reason=reason,
            )
        ]


# Provider decline codes passed through as they are; anything else is PROVIDER_DECLINED.
_PASSED_THROUGH = frozenset(
    {DeclineReason.CARD_DECLINED, DeclineReason.INSUFFICIENT_FUNDS, DeclineReason.INVALID_TOKEN}
)


def _interpret(result: ProviderResult) -> tuple[PaymentStatus, DeclineReason | None, str]:
    """(status, stable reason code, human detail) for a provider's answer."""
    if result.approved:
        if not result.provider_ref:
            return PaymentStatus.FAILED, DeclineReason.PROVIDER_ERROR, "approved without a provider reference"
        return PaymentStatus.AUTHORIZED, None, ""
    if result.decline_code in _PASSED_THROUGH:
        return PaymentStatus.FAILED, DeclineReason(result.decline_code), result.message
    detail = " ".join(part for part in (result.decline_code, result.message) if part)
    return PaymentStatus.FAILED, DeclineReason.PROVIDER_DECLINED, detail

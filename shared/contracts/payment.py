"""Events the payment service owns (topic `payment.events`, key = order id)."""

from __future__ import annotations

from enum import StrEnum

from shared.contracts.base import OrderEvent, register
from shared.contracts.common import CURRENCY, Fen, PaymentMethod
from shared.contracts.order import OrderEndReason
from shared.contracts.topics import PAYMENT_EVENTS


class DeclineReason(StrEnum):
    """Stable codes in PaymentFailed.reason: consumers branch on them, so never rename one."""

    CARD_DECLINED = "CARD_DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INVALID_TOKEN = "INVALID_TOKEN"  # noqa: S105 - a decline code, not a secret
    # A decline code this platform does not know yet; the provider's own code goes in `detail`.
    PROVIDER_DECLINED = "PROVIDER_DECLINED"
    # The provider said yes but gave no reference: without one the authorization cannot be voided.
    PROVIDER_ERROR = "PROVIDER_ERROR"


class _PaymentEvent(OrderEvent):
    TOPIC = PAYMENT_EVENTS
    payment_id: str


@register
class PaymentAuthorized(_PaymentEvent):
    TYPE = "payment.authorized"
    amount_fen: Fen
    currency: str = CURRENCY
    method: PaymentMethod
    provider_ref: str


@register
class PaymentFailed(_PaymentEvent):
    """The provider declined, or did not answer in time. `reason` is a stable code (CARD_DECLINED...)."""

    TYPE = "payment.failed"
    method: PaymentMethod
    reason: DeclineReason
    detail: str = ""


@register
class PaymentVoided(_PaymentEvent):
    """An authorization was released because its order was cancelled after all."""

    TYPE = "payment.voided"
    amount_fen: Fen
    currency: str = CURRENCY
    reason: OrderEndReason

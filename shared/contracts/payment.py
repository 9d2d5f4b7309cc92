"""Events the payment service owns (topic `payment.events`, key = order id)."""

from __future__ import annotations

from shared.contracts.base import Event, register
from shared.contracts.common import CURRENCY, Fen, PaymentMethod
from shared.contracts.topics import PAYMENT_EVENTS


class _PaymentEvent(Event):
    TOPIC = PAYMENT_EVENTS
    order_id: str
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
    reason: str
    detail: str = ""


@register
class PaymentVoided(_PaymentEvent):
    """An authorization was released because its order was cancelled after all."""

    TYPE = "payment.voided"
    amount_fen: Fen
    currency: str = CURRENCY
    reason: str

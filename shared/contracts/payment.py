"""Events the payment service owns (topic `payment.events`, key = order id)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

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
    # No answer from the provider within the payment's deadline (retries included).
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    # The payer pressed Decline on the provider's page (WeChat Pay, Alipay).
    PAYER_DECLINED = "PAYER_DECLINED"
    # The provider was paid a different amount than the order's: refused and given back.
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"


class PayActionType(StrEnum):
    QR = "qr"  # show the URL as a QR code for the payer's phone (WeChat Pay)
    REDIRECT = "redirect"  # send the payer's browser to the URL (Alipay)


class RefundReason(StrEnum):
    """Stable codes in PaymentRefunded.reason and PaymentVoided.late_reason."""

    # The order was asked to refund (RefundRequested: after-sales, a cancel after payment).
    REQUESTED = "REQUESTED"
    # The money arrived after the order had ended (cancelled, timed out): given back automatically.
    LATE_PAYMENT = "LATE_PAYMENT"
    # The order ended after the payment was captured: its whole amount goes back.
    ORDER_ENDED = "ORDER_ENDED"


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
class PaymentPending(_PaymentEvent):
    """The provider is waiting for the payer (WeChat Pay, Alipay): show them `action_url`.

    The order stays AWAITING_PAYMENT until PaymentAuthorized or PaymentFailed follows."""

    TYPE = "payment.pending"
    method: PaymentMethod
    amount_fen: Fen
    currency: str = CURRENCY
    action_type: PayActionType
    action_url: str


@register
class PaymentCaptured(_PaymentEvent):
    """The authorized money was taken (on OrderConfirmed; wallets capture when the payer pays)."""

    TYPE = "payment.captured"
    amount_fen: Fen
    currency: str = CURRENCY


@register
class PaymentVoided(_PaymentEvent):
    """An authorization was released because its order was cancelled after all."""

    TYPE = "payment.voided"
    amount_fen: Fen
    currency: str = CURRENCY
    reason: OrderEndReason
    customer_id: str | None = Field(default=None, description="Whose payment it was (absent before v1.1).")
    late: bool = Field(
        default=False,
        description="True when the authorization arrived after its order had ended and was released "
        "automatically.",
    )


@register
class PaymentRefunded(_PaymentEvent):
    """Money went back to the customer: `amount_fen` now, `refunded_total_fen` over the payment's life."""

    TYPE = "payment.refunded"
    refund_id: str
    customer_id: str
    amount_fen: Fen = Field(gt=0)
    refunded_total_fen: Fen
    captured_fen: Fen
    currency: str = CURRENCY
    reason: RefundReason
    detail: str = ""

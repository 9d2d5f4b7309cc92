from datetime import UTC, datetime, timedelta

import pytest

from services.payment.domain import (
    Payment,
    PaymentStatus,
    ProviderResult,
    payment_id_for,
)
from shared.contracts import (
    DeclineReason,
    OrderEndReason,
    PaymentAuthorized,
    PaymentFailed,
    PaymentMethod,
    PaymentRequested,
    PaymentVoided,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def request(order_id: str = "ord-1", method: PaymentMethod = PaymentMethod.ALIPAY) -> PaymentRequested:
    return PaymentRequested(
        order_id=order_id, customer_id="cus-1", amount_fen=12_345, method=method, token="tok_x"
    )


def test_payment_id_is_deterministic_per_order() -> None:
    assert payment_id_for("ord-1") == payment_id_for("ord-1")
    assert payment_id_for("ord-1") != payment_id_for("ord-2")
    assert payment_id_for("ord-1").startswith("pay_")


def test_approval_authorizes_with_the_provider_reference() -> None:
    payment, event = Payment.authorize(request(), ProviderResult(approved=True, provider_ref="ref-9"), NOW)

    assert payment.status is PaymentStatus.AUTHORIZED
    assert payment.payment_id == payment_id_for("ord-1")
    assert payment.provider_ref == "ref-9"
    assert payment.reason is None
    assert [e.status for e in payment.timeline] == [PaymentStatus.AUTHORIZED]
    assert event == PaymentAuthorized(
        order_id="ord-1",
        payment_id=payment.payment_id,
        amount_fen=12_345,
        currency="CNY",
        method=PaymentMethod.ALIPAY,
        provider_ref="ref-9",
    )


@pytest.mark.parametrize("code", ["CARD_DECLINED", "INSUFFICIENT_FUNDS", "INVALID_TOKEN"])
def test_known_decline_codes_are_the_stable_reason(code: str) -> None:
    payment, event = Payment.authorize(
        request(), ProviderResult(approved=False, decline_code=code, message="no"), NOW
    )

    assert payment.status is PaymentStatus.FAILED
    assert payment.reason == code
    assert isinstance(event, PaymentFailed)
    assert (event.reason, event.detail, event.method) == (code, "no", PaymentMethod.ALIPAY)


def test_an_unknown_decline_code_maps_to_provider_declined_keeping_the_raw_code() -> None:
    _, event = Payment.authorize(
        request(), ProviderResult(approved=False, decline_code="E4711", message="risk"), NOW
    )

    assert isinstance(event, PaymentFailed)
    assert event.reason == DeclineReason.PROVIDER_DECLINED
    assert event.detail == "E4711 risk"


def test_an_approval_without_reference_fails_because_it_could_never_be_voided() -> None:
    payment, event = Payment.authorize(request(), ProviderResult(approved=True), NOW)

    assert payment.status is PaymentStatus.FAILED
    assert isinstance(event, PaymentFailed)
    assert event.reason == DeclineReason.PROVIDER_ERROR


def test_void_releases_an_authorized_payment() -> None:
    payment, _ = Payment.authorize(request(), ProviderResult(approved=True, provider_ref="ref-9"), NOW)
    later = NOW + timedelta(minutes=1)

    events = payment.void(OrderEndReason.PAYMENT_TIMEOUT, later)

    assert events == [
        PaymentVoided(
            order_id="ord-1",
            payment_id=payment.payment_id,
            amount_fen=12_345,
            currency="CNY",
            reason=OrderEndReason.PAYMENT_TIMEOUT,
        )
    ]
    assert payment.status is PaymentStatus.VOIDED
    assert payment.updated_at == later
    assert [e.status for e in payment.timeline] == [PaymentStatus.AUTHORIZED, PaymentStatus.VOIDED]


def test_void_does_nothing_unless_authorized() -> None:
    failed, _ = Payment.authorize(
        request(), ProviderResult(approved=False, decline_code="CARD_DECLINED"), NOW
    )
    authorized, _ = Payment.authorize(request(), ProviderResult(approved=True, provider_ref="r"), NOW)
    authorized.void(OrderEndReason.PAYMENT_TIMEOUT, NOW)

    assert failed.void(OrderEndReason.PAYMENT_TIMEOUT, NOW) == []
    assert failed.status is PaymentStatus.FAILED
    assert authorized.void(OrderEndReason.PAYMENT_DECLINED, NOW) == []
    assert authorized.reason == OrderEndReason.PAYMENT_TIMEOUT

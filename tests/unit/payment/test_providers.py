from datetime import UTC, datetime

import pytest

from services.payment.domain import Payment, PaymentStatus
from services.payment.providers import SandboxProvider, sandbox_providers
from shared.contracts import DeclineReason, PaymentMethod, PaymentRequested

pytestmark = pytest.mark.unit


async def test_every_method_has_a_sandbox_adapter() -> None:
    assert set(sandbox_providers()) == set(PaymentMethod)


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [
        ("tok_approve", PaymentStatus.AUTHORIZED, None),
        ("tok_decline", PaymentStatus.FAILED, DeclineReason.CARD_DECLINED),
        ("tok_insufficient_funds", PaymentStatus.FAILED, DeclineReason.INSUFFICIENT_FUNDS),
        ("tok_something_else", PaymentStatus.FAILED, DeclineReason.INVALID_TOKEN),
    ],
)
async def test_sandbox_tokens_are_the_documented_contract(
    token: str, status: PaymentStatus, reason: DeclineReason | None
) -> None:
    provider = SandboxProvider(PaymentMethod.WECHAT_PAY)
    result = await provider.authorize("pay_1", 100, "CNY", token)
    requested = PaymentRequested(
        order_id="o", customer_id="c", amount_fen=100, method=PaymentMethod.WECHAT_PAY, token=token
    )

    payment, _ = Payment.authorize(requested, result, datetime.now(UTC))

    assert (payment.status, payment.reason) == (status, reason)


async def test_sandbox_answers_the_same_reference_for_the_same_idempotency_key() -> None:
    provider = SandboxProvider(PaymentMethod.BANK_CARD)

    first = await provider.authorize("pay_1", 100, "CNY", "tok_approve")
    again = await provider.authorize("pay_1", 100, "CNY", "tok_approve")
    other = await provider.authorize("pay_2", 100, "CNY", "tok_approve")

    assert first == again
    assert first.provider_ref != other.provider_ref
    await provider.void("pay_1", first.provider_ref or "")

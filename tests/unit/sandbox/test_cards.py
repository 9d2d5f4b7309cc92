"""The sandbox as a card acquirer, driven through the payment service's real bank_card adapter."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from services.payment.adapters import ProviderRejected
from services.payment.protocol import (
    DEV_CREDENTIALS,
    IDEMPOTENCY_KEY_HEADER,
    AuthorizeRequest,
    MerchantCredentials,
    new_nonce,
    payments_path,
    request_headers,
    unix_seconds,
)
from services.payment.providers import Outcome, ProviderUnavailable
from shared.clock import utc_now
from shared.contracts import PaymentMethod
from tests.unit.sandbox.conftest import NOTIFY_URL, World

pytestmark = pytest.mark.unit

CARD = PaymentMethod.BANK_CARD
PAN = "4111 1111 1111 1111"


async def test_an_approved_card_is_authorized_then_captured_once(world: World) -> None:
    card = world.provider(CARD)

    authorized = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "order 1")
    assert authorized.provider_ref is not None
    captured = await card.capture("pay-1", authorized.provider_ref, 1234)
    again = await card.capture("pay-1", authorized.provider_ref, 1234)

    assert (authorized.outcome, authorized.amount_fen, authorized.action) == (Outcome.AUTHORIZED, 1234, None)
    assert (captured.outcome, captured.amount_fen) == (Outcome.CAPTURED, 1234)
    assert again == captured
    entries = (await world.http.get("/ledger", params={"payment_id": "pay-1"})).json()["entries"]
    assert [
        (e["seq"], e["operation"], e["outcome"], e["amount_fen"], e["idempotency_key"]) for e in entries
    ] == [
        (1, "authorize", "authorized", 1234, "pay-1"),
        (2, "capture", "captured", 1234, "pay-1:capture"),
    ]
    assert {e["method"] for e in entries} == {"bank_card"}
    assert {e["provider_ref"] for e in entries} == {authorized.provider_ref}


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_decline", "CARD_DECLINED"),
        ("tok_insufficient_funds", "INSUFFICIENT_FUNDS"),
        ("tok_no_such_token", "INVALID_TOKEN"),
    ],
)
async def test_each_declining_token_declines_with_its_code(world: World, token: str, code: str) -> None:
    answer = await world.provider(CARD).authorize("pay-1", 1234, "CNY", token, NOTIFY_URL, "")

    assert (answer.outcome, answer.decline_code) == (Outcome.DECLINED, code)
    assert answer.message
    assert await world.ledger("pay-1") == [("authorize", "declined")]


async def test_a_repeated_authorization_gets_the_first_answer_and_one_ledger_entry(world: World) -> None:
    card = world.provider(CARD)

    first = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")
    second = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")
    other = await card.authorize("pay-2", 1234, "CNY", "tok_approve", NOTIFY_URL, "")

    assert second == first
    assert other.provider_ref != first.provider_ref
    assert await world.ledger("pay-1") == [("authorize", "authorized")]


async def test_an_idempotency_key_reused_for_another_request_is_refused_and_changes_nothing(
    world: World,
) -> None:
    card = world.provider(CARD)
    await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")

    with pytest.raises(ProviderRejected) as refused:
        await card.authorize("pay-1", 9999, "CNY", "tok_approve", NOTIFY_URL, "")

    assert (refused.value.status_code, refused.value.code) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert (await card.query("pay-1")).amount_fen == 1234
    assert await world.ledger("pay-1") == [("authorize", "authorized")]


async def test_a_flaky_provider_answers_503_twice_then_authorizes_the_callers_retry_once(
    world: World,
) -> None:
    card = world.provider(CARD)

    for _ in range(2):
        with pytest.raises(ProviderUnavailable, match="503"):
            await card.authorize("pay-1", 1234, "CNY", "tok_flaky", NOTIFY_URL, "")
    answer = await card.authorize("pay-1", 1234, "CNY", "tok_flaky", NOTIFY_URL, "")

    assert answer.outcome is Outcome.AUTHORIZED
    assert await world.ledger("pay-1") == [("authorize", "authorized")]


async def test_a_silent_provider_never_authorizes_and_a_void_closes_the_payment_id(world: World) -> None:
    card = world.provider(CARD)
    impatient = world.provider(CARD, timeout_s=0.02)

    with pytest.raises(ProviderUnavailable, match="no answer within"):
        await impatient.authorize("pay-1", 1234, "CNY", "tok_timeout", NOTIFY_URL, "")
    with pytest.raises(ProviderUnavailable, match="504"):  # held until the sandbox gives up
        await card.authorize("pay-1", 1234, "CNY", "tok_timeout", NOTIFY_URL, "")
    assert (await card.query("pay-1")).outcome is Outcome.NOT_FOUND
    assert await world.ledger("pay-1") == []

    voided = await card.void("pay-1", None)
    late = await card.authorize("pay-1", 1234, "CNY", "tok_timeout", NOTIFY_URL, "")

    assert voided.outcome is Outcome.VOIDED
    assert (late.outcome, late.decline_code) == (Outcome.DECLINED, "PAYMENT_CLOSED")
    assert (await card.query("pay-1")).outcome is Outcome.VOIDED
    assert await world.ledger("pay-1") == [("void", "voided"), ("authorize", "declined")]


async def test_a_void_before_any_authorization_declines_a_later_approved_authorization(world: World) -> None:
    card = world.provider(CARD)

    await card.void("pay-1", None)
    await card.void("pay-1", None)
    answer = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")

    assert (answer.outcome, answer.decline_code) == (Outcome.DECLINED, "PAYMENT_CLOSED")
    assert await world.ledger("pay-1") == [("void", "voided"), ("authorize", "declined")]


async def test_a_slow_authorization_answers_the_retry_once_done_and_authorizes_once(world: World) -> None:
    impatient = world.provider(CARD, timeout_s=0.02)
    patient = world.provider(CARD)

    with pytest.raises(ProviderUnavailable):
        await impatient.authorize("pay-1", 1234, "CNY", "tok_delay", NOTIFY_URL, "")
    assert await world.ledger("pay-1") == []
    retried = await patient.authorize("pay-1", 1234, "CNY", "tok_delay", NOTIFY_URL, "")

    assert retried.outcome is Outcome.AUTHORIZED
    assert (await patient.query("pay-1")).outcome is Outcome.AUTHORIZED
    assert await world.ledger("pay-1") == [("authorize", "authorized")]


async def test_a_voided_authorization_cannot_be_captured(world: World) -> None:
    card = world.provider(CARD)
    authorized = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")
    assert authorized.provider_ref is not None

    voided = await card.void("pay-1", authorized.provider_ref)
    again = await card.void("pay-1", authorized.provider_ref)
    with pytest.raises(ProviderRejected) as refused:
        await card.capture("pay-1", authorized.provider_ref, 1234)

    assert (voided.outcome, voided.amount_fen) == (Outcome.VOIDED, 1234)
    assert again.outcome is Outcome.VOIDED
    assert (refused.value.status_code, refused.value.code) == (409, "INVALID_STATE")
    assert await world.ledger("pay-1") == [("authorize", "authorized"), ("void", "voided")]


async def test_voiding_a_captured_payment_answers_captured_and_moves_nothing(world: World) -> None:
    card = world.provider(CARD)
    authorized = await card.authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")
    assert authorized.provider_ref is not None
    await card.capture("pay-1", authorized.provider_ref, 1234)

    answer = await card.void("pay-1", authorized.provider_ref)

    assert answer.outcome is Outcome.CAPTURED
    assert await world.ledger("pay-1") == [("authorize", "authorized"), ("capture", "captured")]


async def test_refunds_never_exceed_what_was_captured_and_repeat_once(world: World) -> None:
    card = world.provider(CARD)
    authorized = await card.authorize("pay-1", 1000, "CNY", "tok_approve", NOTIFY_URL, "")
    ref = authorized.provider_ref
    assert ref is not None
    before_capture = await card.refund("ref-0", "pay-1", ref, 1)
    await card.capture("pay-1", ref, 1000)

    first = await card.refund("ref-1", "pay-1", ref, 600)
    repeated = await card.refund("ref-1", "pay-1", ref, 600)
    too_much = await card.refund("ref-2", "pay-1", ref, 401)
    rest = await card.refund("ref-3", "pay-1", ref, 400)

    assert (before_capture.outcome, before_capture.decline_code) == (
        Outcome.DECLINED,
        "REFUND_EXCEEDS_CAPTURED",
    )
    assert (first.outcome, first.amount_fen) == (Outcome.REFUNDED, 600)
    assert repeated == first
    assert (too_much.outcome, too_much.decline_code) == (Outcome.DECLINED, "REFUND_EXCEEDS_CAPTURED")
    assert (rest.outcome, rest.amount_fen) == (Outcome.REFUNDED, 400)
    assert await world.ledger("pay-1") == [
        ("authorize", "authorized"),
        ("refund", "declined"),
        ("capture", "captured"),
        ("refund", "refunded"),
        ("refund", "declined"),
        ("refund", "refunded"),
    ]


async def test_a_payment_is_not_found_by_another_method(world: World) -> None:
    await world.provider(CARD).authorize("pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, "")

    assert (await world.provider(PaymentMethod.ALIPAY).query("pay-1")).outcome is Outcome.NOT_FOUND


# --- requests the sandbox refuses ----------------------------------------------------------------


def raw_authorize(
    token: str | None,
    *,
    credentials: MerchantCredentials = DEV_CREDENTIALS[CARD],
    timestamp: int | None = None,
    nonce: str | None = None,
    idempotency_key: str | None = "pay-1",
) -> tuple[bytes, dict[str, str]]:
    """A bank_card authorize request, signed by hand."""
    body = AuthorizeRequest(
        payment_id="pay-1", amount_fen=1234, currency="CNY", token=token, notify_url=NOTIFY_URL
    ).model_dump_json()
    headers = request_headers(
        credentials,
        "POST",
        payments_path(CARD),
        body.encode(),
        timestamp=timestamp if timestamp is not None else unix_seconds(utc_now()),
        nonce=nonce or new_nonce(),
    )
    if idempotency_key:
        headers[IDEMPOTENCY_KEY_HEADER] = idempotency_key
    return body.encode(), headers


async def test_a_card_number_sent_as_token_is_refused_and_never_echoed_or_logged(world: World) -> None:
    body, headers = raw_authorize(PAN)

    with capture_logs() as logs:
        response = await world.http.post(payments_path(CARD), content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "CARD_NUMBER_REFUSED"
    assert "1111" not in response.text
    assert "1111" not in json.dumps(logs, default=str)
    assert await world.ledger("pay-1") == []


@pytest.mark.parametrize(
    "signed",
    [
        {"credentials": DEV_CREDENTIALS[PaymentMethod.ALIPAY]},
        {"credentials": MerchantCredentials(DEV_CREDENTIALS[CARD].merchant_id, "a wrong key", "x")},
        {"timestamp": unix_seconds(utc_now()) - 3600},
    ],
    ids=["another merchant", "a wrong key", "stale"],
)
async def test_a_request_not_signed_by_the_merchant_now_is_refused(
    world: World, signed: dict[str, object]
) -> None:
    body, headers = raw_authorize("tok_approve", **signed)  # type: ignore[arg-type]

    response = await world.http.post(payments_path(CARD), content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_SIGNATURE"
    assert await world.ledger("pay-1") == []


async def test_an_unsigned_request_and_a_replayed_one_are_refused(world: World) -> None:
    body, headers = raw_authorize("tok_decline")
    unsigned = {IDEMPOTENCY_KEY_HEADER: "pay-1"}

    refused = await world.http.post(payments_path(CARD), content=body, headers=unsigned)
    first = await world.http.post(payments_path(CARD), content=body, headers=headers)
    replayed = await world.http.post(payments_path(CARD), content=body, headers=headers)

    assert refused.status_code == 401
    assert first.status_code == 200
    assert (replayed.status_code, replayed.json()["message"]) == (401, "replayed nonce")


async def test_a_money_call_without_an_idempotency_key_is_refused(world: World) -> None:
    body, headers = raw_authorize("tok_approve", idempotency_key=None)

    response = await world.http.post(payments_path(CARD), content=body, headers=headers)

    assert (response.status_code, response.json()["code"]) == (400, "IDEMPOTENCY_KEY_REQUIRED")
    assert await world.ledger("pay-1") == []


async def test_an_invalid_body_is_refused_without_echoing_it(world: World) -> None:
    body = b'{"payment_id": "pay-1", "amount_fen": -5, "token": "tok_secret_looking"}'
    headers = request_headers(
        DEV_CREDENTIALS[CARD],
        "POST",
        payments_path(CARD),
        body,
        timestamp=unix_seconds(utc_now()),
        nonce=new_nonce(),
    )

    response = await world.http.post(payments_path(CARD), content=body, headers=headers)

    assert (response.status_code, response.json()["code"]) == (400, "INVALID_REQUEST")
    assert "amount_fen" in response.text and "tok_secret_looking" not in response.text


async def test_logs_name_the_method_and_payment_never_the_token(world: World) -> None:
    card = world.provider(CARD)

    with capture_logs() as logs:
        for payment_id, token in [("p-1", "tok_approve"), ("p-2", "tok_decline"), ("p-3", "tok_flaky")]:
            try:
                await card.authorize(payment_id, 100, "CNY", token, NOTIFY_URL, "")
            except ProviderUnavailable:
                pass

    assert {entry.get("payment_id") for entry in logs} >= {"p-1", "p-2", "p-3"}
    assert "tok_" not in json.dumps(logs, default=str)

"""The sandbox as WeChat Pay and Alipay: the payer's page, the signed callbacks and their delivery."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from sandbox.callbacks import Notifier
from services.payment.adapters import HttpProvider, ProviderRejected
from services.payment.protocol import NONCE_HEADER, CallbackBody
from services.payment.providers import CallbackNotice, InvalidCallback, Outcome, ProviderAnswer
from shared.clock import utc_now
from shared.contracts import PayActionType, PaymentMethod
from tests.unit.sandbox.conftest import NOTIFY_URL, PUBLIC_URL, Received, World, eventually

pytestmark = pytest.mark.unit

WECHAT = PaymentMethod.WECHAT_PAY


async def pending(world: World, method: PaymentMethod = WECHAT, payment_id: str = "pay-1") -> ProviderAnswer:
    return await world.provider(method).authorize(
        payment_id, 1234, "CNY", None, NOTIFY_URL, "Longjing tea <b>"
    )


async def decide(world: World, payment_id: str, **decision: object) -> httpx.Response:
    return await world.http.post(f"/sandbox/payments/{payment_id}/decide", json=decision)


async def delivered(world: World, count: int) -> list[Received]:
    async def received() -> list[Received]:
        return world.merchant.received

    return await eventually(received, lambda got: len(got) >= count, f"{count} callbacks")


def verified(provider: HttpProvider, received: Received) -> CallbackNotice:
    return provider.verify_callback(received.headers, received.body, utc_now())


@pytest.mark.parametrize(
    ("method", "action"),
    [(PaymentMethod.WECHAT_PAY, PayActionType.QR), (PaymentMethod.ALIPAY, PayActionType.REDIRECT)],
)
async def test_a_wallet_payment_waits_for_the_payer_on_the_providers_page(
    world: World, method: PaymentMethod, action: PayActionType
) -> None:
    answer = await pending(world, method)
    again = await pending(world, method)

    assert answer.outcome is Outcome.PENDING
    assert answer.action is not None and answer.action.type is action
    assert answer.action.url == f"{PUBLIC_URL}/pay/{answer.provider_ref}"
    assert again == answer
    assert await world.ledger("pay-1") == []


async def test_the_payers_approval_captures_and_sends_a_notice_the_adapter_verifies(world: World) -> None:
    wechat = world.provider(WECHAT)
    answer = await pending(world)

    decided = await decide(world, "pay-1", decision="approve")
    [callback] = await delivered(world, 1)
    notice = verified(wechat, callback)

    assert decided.status_code == 200 and decided.json()["outcome"] == "captured"
    assert callback.url == NOTIFY_URL
    assert (notice.payment_id, notice.provider_ref, notice.outcome, notice.amount_fen) == (
        "pay-1",
        answer.provider_ref,
        Outcome.CAPTURED,
        1234,
    )
    assert (await wechat.query("pay-1")).outcome is Outcome.CAPTURED
    assert await world.ledger("pay-1") == [("authorize", "captured")]


async def test_the_payers_decline_is_notified_with_payer_declined(world: World) -> None:
    await pending(world, PaymentMethod.ALIPAY)

    await decide(world, "pay-1", decision="decline")
    [callback] = await delivered(world, 1)
    notice = verified(world.provider(PaymentMethod.ALIPAY), callback)

    assert (notice.outcome, notice.decline_code) == (Outcome.DECLINED, "PAYER_DECLINED")
    assert await world.ledger("pay-1") == [("authorize", "declined")]


async def test_a_tampered_misdirected_or_stale_callback_is_invalid(world: World) -> None:
    wechat = world.provider(WECHAT)
    await pending(world)
    await decide(world, "pay-1", decision="approve")
    [callback] = await delivered(world, 1)

    tampered = callback.body.replace(b"pay-1", b"pay-2")
    with pytest.raises(InvalidCallback, match="bad signature"):
        wechat.verify_callback(callback.headers, tampered, utc_now())
    with pytest.raises(InvalidCallback, match="unknown merchant"):
        world.provider(PaymentMethod.ALIPAY).verify_callback(callback.headers, callback.body, utc_now())
    with pytest.raises(InvalidCallback, match="stale timestamp"):
        wechat.verify_callback(callback.headers, callback.body, utc_now() + timedelta(seconds=301))
    with pytest.raises(InvalidCallback, match="missing or malformed signature headers"):
        wechat.verify_callback({}, callback.body, utc_now())


async def test_a_failed_delivery_is_retried_with_the_same_notification_and_a_fresh_nonce(
    world: World,
) -> None:
    world.merchant.script = [500, httpx.ConnectError("refused"), 200]
    await pending(world)

    await decide(world, "pay-1", decision="approve")
    attempts = await delivered(world, 3)
    sent = await eventually(
        lambda: world.callbacks("pay-1"), lambda got: len(got) == 3, "3 recorded deliveries"
    )

    notices = [verified(world.provider(WECHAT), attempt) for attempt in attempts]
    assert len({notice.notification_id for notice in notices}) == 1
    assert len({attempt.headers[NONCE_HEADER] for attempt in attempts}) == 3
    assert [s["status_code"] for s in sent] == [500, None, 200]


async def test_delivery_gives_up_after_its_attempts(world: World) -> None:
    world.merchant.script = [503, 503, 503, 200]
    notifier = Notifier(
        credentials=world.sandbox.settings.credentials, send=world.merchant, attempts=3, backoff_s=0.001
    )
    notice = CallbackBody(
        notification_id="n-1", payment_id="pay-1", provider_ref="r-1", outcome=Outcome.CAPTURED, amount_fen=1
    )

    await notifier.deliver(WECHAT, NOTIFY_URL, notice)

    assert [sent.status_code for sent in notifier.sent] == [503, 503, 503]
    assert len(world.merchant.received) == 3


async def test_the_payer_may_ask_for_a_duplicate_or_a_lost_notice(world: World) -> None:
    await pending(world, payment_id="lost")
    await pending(world, payment_id="twice")

    await decide(world, "lost", decision="approve", callbacks=0)
    await decide(world, "twice", decision="approve", callbacks=2)
    received = await delivered(world, 2)

    notices = [verified(world.provider(WECHAT), r) for r in received]
    assert [n.payment_id for n in notices] == ["twice", "twice"]
    assert notices[0].notification_id == notices[1].notification_id and notices[0].nonce != notices[1].nonce
    assert await world.callbacks("lost") == []
    assert await world.ledger("lost") == [("authorize", "captured")]


async def test_recorded_callbacks_replay_byte_for_byte(world: World) -> None:
    await pending(world)
    await decide(world, "pay-1", decision="approve")
    [received] = await delivered(world, 1)

    [recorded] = await eventually(lambda: world.callbacks("pay-1"), bool, "the recorded callback")

    assert recorded["url"] == NOTIFY_URL and recorded["status_code"] == 200
    assert recorded["body"].encode() == received.body
    assert recorded["headers"] == received.headers
    notice = world.provider(WECHAT).verify_callback(recorded["headers"], recorded["body"].encode(), utc_now())
    assert notice.payment_id == "pay-1"


async def test_the_notify_hook_resends_now_and_can_send_an_old_notice(world: World) -> None:
    await pending(world)
    await decide(world, "pay-1", decision="approve", callbacks=0)
    world.merchant.script = [200, 401]

    resent = await world.http.post("/sandbox/payments/pay-1/notify", json={"times": 2})
    old = await world.http.post("/sandbox/payments/pay-1/notify", json={"timestamp_offset_s": -3600})

    assert resent.status_code == 200 and resent.json() == {
        "deliveries": [{"status_code": 200}, {"status_code": 401}]
    }
    assert old.status_code == 200 and old.json() == {"deliveries": [{"status_code": 200}]}
    fresh, again, stale = world.merchant.received
    wechat = world.provider(WECHAT)
    assert verified(wechat, fresh).notification_id == verified(wechat, again).notification_id
    with pytest.raises(InvalidCallback, match="stale timestamp"):
        verified(wechat, stale)
    assert await world.ledger("pay-1") == [("authorize", "captured")]


async def test_the_notify_hook_refuses_a_payment_with_nothing_to_tell(world: World) -> None:
    await pending(world)

    waiting = await world.http.post("/sandbox/payments/pay-1/notify", json={"times": 1})
    unknown = await world.http.post("/sandbox/payments/nope/notify", json={"times": 1})

    assert waiting.status_code == 409 and waiting.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert unknown.status_code == 404
    assert world.merchant.received == []


# --- the pay page --------------------------------------------------------------------------------


async def test_the_pay_page_shows_what_is_paid_to_whom_and_the_payers_choices(world: World) -> None:
    answer = await pending(world)
    assert answer.action is not None

    page = await world.http.get(answer.action.url)

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for shown in ("¥12.34", "WeChat Pay", "sandbox-wechat-pay-merchant", "Pay</button>", "Decline</button>"):
        assert shown in page.text
    assert "Longjing tea &lt;b&gt;" in page.text and "Longjing tea <b>" not in page.text


async def test_paying_on_the_page_captures_once(world: World) -> None:
    answer = await pending(world)
    assert answer.action is not None

    paid = await world.http.post(answer.action.url, data={"decision": "approve", "callbacks": "1"})
    twice = await world.http.post(answer.action.url, data={"decision": "approve"})
    page = await world.http.get(answer.action.url)
    await delivered(world, 1)

    assert paid.status_code == 200 and "Paid" in paid.text
    assert twice.status_code == 409
    assert "Pay</button>" not in page.text
    assert await world.ledger("pay-1") == [("authorize", "captured")]


async def test_an_unknown_pay_link_is_not_found(world: World) -> None:
    assert (await world.http.get("/pay/sbx_nothing")).status_code == 404
    assert (await world.http.post("/pay/sbx_nothing", data={"decision": "approve"})).status_code == 404


async def test_a_closed_payment_cannot_be_paid_unless_the_hook_forces_a_late_payment(world: World) -> None:
    wechat = world.provider(WECHAT)
    answer = await pending(world)
    assert answer.action is not None and answer.provider_ref is not None

    closed = await wechat.void("pay-1", answer.provider_ref)
    on_page = await world.http.post(answer.action.url, data={"decision": "approve"})
    by_hook = await decide(world, "pay-1", decision="approve")
    assert await world.ledger("pay-1") == [("void", "voided")]
    forced = await decide(world, "pay-1", decision="approve", force=True)
    [late] = await delivered(world, 1)
    refunded = await wechat.refund("ref-1", "pay-1", answer.provider_ref, 1234)

    assert closed.outcome is Outcome.VOIDED
    assert on_page.status_code == 409 and "closed" in on_page.text
    assert by_hook.status_code == 409
    assert forced.status_code == 200 and forced.json()["outcome"] == "captured"
    assert verified(wechat, late).outcome is Outcome.CAPTURED
    assert refunded.outcome is Outcome.REFUNDED
    assert await world.ledger("pay-1") == [
        ("void", "voided"),
        ("authorize", "captured"),
        ("refund", "refunded"),
    ]


async def test_only_a_wallet_payment_waits_for_a_payers_decision(world: World) -> None:
    await world.provider(PaymentMethod.BANK_CARD).authorize(
        "pay-1", 1234, "CNY", "tok_approve", NOTIFY_URL, ""
    )

    refused = await decide(world, "pay-1", decision="approve")
    unknown = await decide(world, "nope", decision="approve")

    assert (refused.status_code, unknown.status_code) == (409, 404)


async def test_a_wallet_payment_needs_a_notify_url(world: World) -> None:
    with pytest.raises(ProviderRejected) as refused:
        await world.provider(WECHAT).authorize("pay-1", 1234, "CNY", None, "", "")

    assert (refused.value.status_code, refused.value.code) == (400, "INVALID_REQUEST")

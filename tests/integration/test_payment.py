"""Payment end to end against the sandbox provider: each method, declines and timeouts, money moved
once under redelivery, callback security, late and lost notifications, and the prod refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.crypto import generate_index_key, generate_pii_key, generate_token_keypair
from tests.integration.conftest import ROOT, Platform
from tests.integration.harness import PROVIDER_DEADLINE_S, eventually

WALLET_ACTIONS = {"wechat_pay": "qr", "alipay": "redirect"}
# Beyond the provider's deadline: the worker's retry pacing, then the saga's own hops.
CHECKS_SLACK_S = 20.0


async def pending_wallet_order(platform: Platform, method: str, sku: str | None = None) -> dict[str, Any]:
    """A wallet order waiting for its payer, with the pay action the gateway shows."""
    sku = sku or await platform.product(available=5)
    accepted = await platform.place([(sku, 1)], method=method, token=None)
    order = await eventually(
        lambda: platform.order(accepted["order_id"]),
        lambda order: (order.get("payment") or {}).get("action") is not None,
        what=f"the {method} order to show its pay action",
    )
    assert order["status"] == "AWAITING_PAYMENT"
    return {**order, "customer_id": accepted["customer_id"], "sku": sku}


async def press(
    platform: Platform, order: dict[str, Any], decision: str, callbacks: int = 1
) -> httpx.Response:
    """The shopper presses Pay or Decline on the sandbox's page (a plain form POST)."""
    url = order["payment"]["action"]["url"]
    async with httpx.AsyncClient(timeout=10.0) as browser:
        page = await browser.get(url)
        assert page.status_code == 200 and "Pay" in page.text and "Decline" in page.text, page.text
        return await browser.post(url, data={"decision": decision, "callbacks": str(callbacks)})


async def payment_events(platform: Platform, order_id: str) -> list[str]:
    return [envelope.type for envelope in await platform.events("payment.events", order_id)]


async def test_a_card_order_is_authorized_then_captured_once(platform: Platform) -> None:
    accepted = await platform.place([(await platform.product(available=3), 1)])
    await platform.status(accepted["order_id"], "CONFIRMED")
    payment = await eventually(
        lambda: platform.payment_of(accepted["order_id"]),
        lambda payment: payment["status"] == "captured",
        what="the card payment to be captured once the order is confirmed",
    )
    assert await platform.operations(payment["payment_id"]) == [
        ("authorize", "authorized"),
        ("capture", "captured"),
    ]


@pytest.mark.parametrize("method", sorted(WALLET_ACTIONS))
async def test_a_wallet_order_waits_for_the_payer_and_confirms_when_they_pay(
    platform: Platform, method: str
) -> None:
    order = await pending_wallet_order(platform, method)
    assert order["payment"]["method"] == method
    assert order["payment"]["status"] == "pending"
    assert order["payment"]["action"]["type"] == WALLET_ACTIONS[method]
    # Viewing the page is not paying: the order still waits.
    assert (await platform.order(order["order_id"]))["status"] == "AWAITING_PAYMENT"

    answer = await press(platform, order, "approve")
    assert answer.status_code == 200, answer.text
    await platform.status(order["order_id"], "CONFIRMED")
    payment = await platform.payment_of(order["order_id"])
    assert payment["status"] == "captured"
    # A wallet takes the money when the payer pays: one ledger entry, no separate capture.
    assert await platform.operations(payment["payment_id"]) == [("authorize", "captured")]


async def test_declining_on_the_pay_page_cancels_the_order_and_releases_its_stock(platform: Platform) -> None:
    sku = await platform.product(available=2)
    order = await pending_wallet_order(platform, "alipay", sku)
    assert (await platform.stock(sku))["available"] == 1

    await press(platform, order, "decline")
    cancelled = await platform.status(order["order_id"], "CANCELLED")
    assert cancelled["reason"] == "PAYMENT_DECLINED"
    assert "PAYER_DECLINED" in cancelled["timeline"][-1]["detail"]
    await eventually(lambda: platform.stock(sku), lambda s: s["available"] == 2, what="alipay stock back")


async def test_a_card_decline_cancels_with_the_providers_reason(platform: Platform) -> None:
    sku = await platform.product(available=2)
    accepted = await platform.place([(sku, 1)], token="tok_insufficient_funds")
    cancelled = await platform.status(accepted["order_id"], "CANCELLED")
    assert cancelled["reason"] == "PAYMENT_DECLINED"
    assert "INSUFFICIENT_FUNDS" in cancelled["timeline"][-1]["detail"]
    await eventually(lambda: platform.stock(sku), lambda s: s["available"] == 2, what="declined stock back")
    payment = await platform.payment_of(accepted["order_id"])
    assert await platform.operations(payment["payment_id"]) == [("authorize", "declined")]


async def test_a_silent_provider_cancels_with_provider_timeout_and_releases_stock(platform: Platform) -> None:
    sku = await platform.product(available=2)
    accepted = await platform.place([(sku, 1)], token="tok_timeout")
    cancelled = await platform.status(
        accepted["order_id"], "CANCELLED", timeout_s=PROVIDER_DEADLINE_S + CHECKS_SLACK_S
    )
    assert cancelled["reason"] == "PROVIDER_TIMEOUT"
    await eventually(lambda: platform.stock(sku), lambda s: s["available"] == 2, what="timed-out stock back")
    payment = await platform.payment_of(accepted["order_id"])
    assert payment["status"] in ("failed", "voided")
    assert "payment.failed" in await payment_events(platform, accepted["order_id"])
    # Nothing was ever held; the safety void may close the payment id at the provider.
    assert [op for op, _ in await platform.operations(payment["payment_id"])] in ([], ["void"])


async def test_a_slow_provider_is_retried_within_the_deadline_and_charges_once(platform: Platform) -> None:
    accepted = await platform.place([(await platform.product(available=2), 1)], token="tok_delay")
    await platform.status(accepted["order_id"], "CONFIRMED", timeout_s=PROVIDER_DEADLINE_S + CHECKS_SLACK_S)
    payment = await platform.payment_of(accepted["order_id"])
    await eventually(
        lambda: platform.operations(payment["payment_id"]),
        lambda ops: ops == [("authorize", "authorized"), ("capture", "captured")],
        what="one authorization and one capture for the delayed card",
    )


async def redeliver(platform: Platform, order_id: str, event_type: str, times: int) -> None:
    """Put the order's `event_type` record on its topic again, byte for byte, `times` more times."""
    [(_, record)] = [
        (envelope, record)
        for envelope, record in await platform.records("order.events", order_id)
        if envelope.type == event_type
    ]
    for _ in range(times):
        await platform.produce_raw("order.events", record.value, record.key, list(record.headers))


async def test_redelivered_requests_and_duplicated_callbacks_move_the_money_once(platform: Platform) -> None:
    # A card: PaymentRequested three times, OrderConfirmed twice.
    card = await platform.place([(await platform.product(available=3), 1)])
    await platform.status(card["order_id"], "CONFIRMED")
    await redeliver(platform, card["order_id"], "order.payment_requested", 2)
    await redeliver(platform, card["order_id"], "order.confirmed", 1)
    # A wallet: PaymentRequested three times and the payer's notice sent twice, then resent.
    wallet = await pending_wallet_order(platform, "wechat_pay")
    await redeliver(platform, wallet["order_id"], "order.payment_requested", 2)
    await press(platform, wallet, "approve", callbacks=2)
    await platform.status(wallet["order_id"], "CONFIRMED")
    wallet_payment = await platform.payment_of(wallet["order_id"])
    resent = await platform.sandbox.post(
        f"/sandbox/payments/{wallet_payment['payment_id']}/notify", json={"times": 1}
    )
    assert resent.status_code == 200, resent.text

    await platform.caught_up("payment", "order.events")
    card_payment = await platform.payment_of(card["order_id"])
    assert await platform.operations(card_payment["payment_id"]) == [
        ("authorize", "authorized"),
        ("capture", "captured"),
    ]
    assert await platform.operations(wallet_payment["payment_id"]) == [("authorize", "captured")]
    delivered = await platform.sent_callbacks(wallet_payment["payment_id"])
    assert len(delivered) == 3 and {c["status_code"] for c in delivered} == {200}, delivered
    for order_id in (card["order_id"], wallet["order_id"]):
        events = await payment_events(platform, order_id)
        assert events.count("payment.authorized") == 1, events
        assert events.count("payment.captured") == 1, events


async def test_forged_stale_and_replayed_callbacks_are_refused_and_change_nothing(platform: Platform) -> None:
    paid = await pending_wallet_order(platform, "wechat_pay")
    await press(platform, paid, "approve")
    await platform.status(paid["order_id"], "CONFIRMED")
    paid_payment = await platform.payment_of(paid["order_id"])
    [genuine] = await platform.sent_callbacks(paid_payment["payment_id"])
    waiting = await pending_wallet_order(platform, "wechat_pay")
    waiting_payment = await platform.payment_of(waiting["order_id"])
    callback_url = "/v1/payments/callbacks/wechat_pay"

    # Replayed: the genuine notice, byte for byte, a second time.
    replayed = await platform.payment.post(callback_url, content=genuine["body"], headers=genuine["headers"])
    # Forged: the same notice retargeted at the order still waiting, its signature unchanged.
    forged_body = genuine["body"].replace(paid_payment["payment_id"], waiting_payment["payment_id"])
    forged_headers = {**genuine["headers"], "X-Provider-Nonce": uuid.uuid4().hex}
    forged = await platform.payment.post(callback_url, content=forged_body, headers=forged_headers)
    # Stale: a correctly signed notice from an hour ago, sent by the provider itself.
    stale = await platform.sandbox.post(
        f"/sandbox/payments/{paid_payment['payment_id']}/notify",
        json={"times": 1, "timestamp_offset_s": -3600},
    )

    assert replayed.status_code == 401, replayed.text
    assert forged.status_code == 401, forged.text
    assert replayed.headers["content-type"].startswith("application/problem+json")
    assert stale.status_code == 200 and stale.json()["deliveries"][0]["status_code"] == 401, stale.text
    assert (await platform.order(waiting["order_id"]))["status"] == "AWAITING_PAYMENT"
    assert (await platform.payment_of(waiting["order_id"]))["status"] == "pending"
    assert await platform.ledger(waiting_payment["payment_id"]) == []
    assert (await payment_events(platform, paid["order_id"])).count("payment.captured") == 1
    for reason in ("replayed", "bad_signature", "stale"):
        refused = await platform.metric(platform.payment, "payment_callbacks_refused_total", reason=reason)
        assert refused >= 1, f"no refused callback counted as {reason}"


async def test_a_payment_that_arrives_after_the_order_was_cancelled_is_refunded(platform: Platform) -> None:
    order = await pending_wallet_order(platform, "alipay")
    customer = platform.customer(order["customer_id"])
    cancelled = await platform.gateway.post(f"/v1/orders/{order['order_id']}/cancel", headers=customer)
    assert cancelled.status_code == 200, cancelled.text
    payment = await platform.payment_of(order["order_id"])
    await eventually(
        lambda: platform.operations(payment["payment_id"]),
        lambda ops: ("void", "voided") in ops,
        what="the cancelled order's payment to be closed at the provider",
    )

    # The payer had paid just before the close; the provider's notice comes late.
    paid = await platform.sandbox.post(
        f"/sandbox/payments/{payment['payment_id']}/decide", json={"decision": "approve", "force": True}
    )
    assert paid.status_code == 200, paid.text
    await eventually(
        lambda: platform.operations(payment["payment_id"]),
        lambda ops: ops[-1:] == [("refund", "refunded")],
        what="the late payment to be refunded automatically",
    )
    ended = await platform.order(order["order_id"])
    assert ended["status"] == "CANCELLED"
    assert "refunded" in ended["timeline"][-1]["note"].lower(), ended["timeline"][-1]
    events = await payment_events(platform, order["order_id"])
    assert "payment.refunded" in events and "payment.authorized" not in events, events
    await eventually(
        lambda: platform.notifications(order["order_id"]),
        lambda found: any("late_payment" in n["template"] for n in found),
        what="the customer to be told about the refunded late payment",
    )


async def test_a_lost_callback_is_settled_by_reconciliation(platform: Platform) -> None:
    order = await pending_wallet_order(platform, "wechat_pay")
    await press(platform, order, "approve", callbacks=0)
    payment = await platform.payment_of(order["order_id"])
    assert await platform.sent_callbacks(payment["payment_id"]) == []
    await platform.status(order["order_id"], "CONFIRMED", timeout_s=30)
    assert await platform.operations(payment["payment_id"]) == [("authorize", "captured")]


PROVIDER_SETTINGS = [
    f"{method}_{setting}"
    for method in ("WECHAT_PAY", "ALIPAY", "BANK_CARD")
    for setting in ("ENDPOINT", "MERCHANT_ID", "API_KEY", "CALLBACK_KEY")
]


def start_in_prod(module: str, home: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ENVIRONMENT": "prod", **settings}
    return subprocess.run(  # noqa: S603 - this repo's own module with a fixed argv
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_prod_refuses_to_start_payment_without_provider_settings(tmp_path: Path) -> None:
    private_key, public_key = generate_token_keypair()
    everything_but_the_providers = {
        "MONGO_URL": "mongodb://payments.internal:27017/?replicaSet=rs0",
        "AUTH_SIGNING_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
        "PII_ENCRYPTION_KEYS": generate_pii_key("k1"),
        "PII_INDEX_KEY": generate_index_key(),
        "PAYMENT_TOKEN_PRIVATE_KEY": private_key,
        "PAYMENT_TOKEN_PUBLIC_KEY": public_key,
    }
    started = start_in_prod("services.payment", tmp_path, **everything_but_the_providers)
    assert started.returncode != 0
    named = [setting for setting in PROVIDER_SETTINGS if setting in started.stderr]
    assert named == PROVIDER_SETTINGS, started.stderr
    assert "AUTH_SIGNING_KEY" not in started.stderr, started.stderr

    bare = start_in_prod("services.payment", tmp_path)
    assert bare.returncode != 0
    assert "PAYMENT_TOKEN_PRIVATE_KEY" in bare.stderr and "BANK_CARD_ENDPOINT" in bare.stderr, bare.stderr

    sandbox = start_in_prod("sandbox", tmp_path)
    assert sandbox.returncode != 0 and "prod" in sandbox.stderr.lower(), sandbox.stderr

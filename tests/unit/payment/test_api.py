"""The payment API over an in-process app and the in-memory store: who may read which payment, and
what the providers' callbacks may change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog

from services.payment import metrics
from services.payment.api import build_callback_router, build_router
from services.payment.domain import Outcome, PayAction, Payment, ProviderReply, payment_id_for
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import (
    OrderCancelled,
    OrderEndReason,
    PayActionType,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentMethod,
    PaymentRefunded,
    PaymentRequested,
)
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.payment import InMemoryPaymentStore
from tests.unit.payment.fakes import World, make_world, pay, types, wallet_request

pytestmark = pytest.mark.unit

ADMIN = Principal("ops-1", Role.ADMIN)
OWNER = Principal("cust-1", Role.CUSTOMER)
OTHER_CUSTOMER = Principal("cust-2", Role.CUSTOMER)
MERCHANT = Principal("merchant-user", Role.MERCHANT, merchant_id="m-1")
GUEST_OF_ORD_1 = Principal("guest-1", Role.GUEST, order_id="ord-1")
GUEST_OF_ORD_2 = Principal("guest-2", Role.GUEST, order_id="ord-2")

PAY_1 = payment_id_for("ord-1")  # cust-1's
PAY_2 = payment_id_for("ord-2")  # cust-2's


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


def stored_payment(order_id: str, customer_id: str, provider_ref: str) -> Payment:
    request = PaymentRequested(
        order_id=order_id,
        customer_id=customer_id,
        amount_fen=500,
        method=PaymentMethod.BANK_CARD,
        sealed_token="x25519.kid.tok_secret",
    )
    now = datetime.now(UTC)
    payment, decision = Payment.request(
        request, correlation_id="corr", now=now, deadline=timedelta(seconds=30), token_problem=None
    )
    payment.answered(
        decision.operations[0], ProviderReply(Outcome.AUTHORIZED, provider_ref=provider_ref), now
    )
    return payment


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = InMemoryPaymentStore()
    for payment in (stored_payment("ord-1", "cust-1", "ref-1"), stored_payment("ord-2", "cust-2", "ref-2")):
        store.payments[payment.payment_id] = payment
    app = create_app("payment", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def listed(client: httpx.AsyncClient, order_id: str, caller: Principal) -> list[dict[str, object]]:
    response = await client.get("/v1/payments", params={"order_id": order_id}, headers=bearer(caller))
    assert response.status_code == 200
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def test_list_by_order_shows_the_payment_without_the_provider_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", params={"order_id": "ord-1"}, headers=bearer(ADMIN))

    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (
        item["order_id"],
        item["customer_id"],
        item["status"],
        item["amount_fen"],
        item["provider_ref"],
    ) == (
        "ord-1",
        "cust-1",
        "authorized",
        500,
        "ref-1",
    )
    assert (item["captured_fen"], item["refunded_fen"], item["action"]) == (0, 0, None)
    assert [entry["status"] for entry in item["timeline"]] == ["requested", "authorized"]
    assert "tok_secret" not in response.text


async def test_list_for_an_unknown_order_is_empty(client: httpx.AsyncClient) -> None:
    assert await listed(client, "nope", ADMIN) == []


async def test_list_requires_an_order_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments", headers=bearer(ADMIN))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "order_id"


async def test_get_by_id_shows_what_the_list_shows(client: httpx.AsyncClient) -> None:
    [item] = await listed(client, "ord-1", ADMIN)

    response = await client.get(f"/v1/payments/{item['payment_id']}", headers=bearer(ADMIN))

    assert response.status_code == 200
    assert response.json() == item


async def test_an_unknown_payment_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments/pay_missing", headers=bearer(ADMIN))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payment-not-found")


async def test_a_malformed_payment_id_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/payments/bad id!", headers=bearer(ADMIN))

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["location"]) == ("payment_id", "path")


@pytest.mark.parametrize(
    ("method_path", "params"),
    [(f"/v1/payments/{PAY_1}", {}), ("/v1/payments", {"order_id": "ord-1"})],
)
async def test_without_a_token_every_route_is_401(
    client: httpx.AsyncClient, method_path: str, params: dict[str, str]
) -> None:
    response = await client.get(method_path, params=params)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_token_that_does_not_verify_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/payments/{PAY_1}", headers={"Authorization": "Bearer not-a-jwt"})

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method_path", "params"),
    [(f"/v1/payments/{PAY_1}", {}), ("/v1/payments", {"order_id": "ord-1"})],
)
async def test_a_merchant_is_refused_payment_details_with_403(
    client: httpx.AsyncClient, method_path: str, params: dict[str, str]
) -> None:
    response = await client.get(method_path, params=params, headers=bearer(MERCHANT))

    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")


async def test_admin_reads_every_customers_payment(client: httpx.AsyncClient) -> None:
    for payment_id in (PAY_1, PAY_2):
        assert (await client.get(f"/v1/payments/{payment_id}", headers=bearer(ADMIN))).status_code == 200
    assert [p["order_id"] for p in await listed(client, "ord-2", ADMIN)] == ["ord-2"]


async def test_a_customer_reads_their_own_payment(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/payments/{PAY_1}", headers=bearer(OWNER))

    assert response.status_code == 200
    assert response.json()["customer_id"] == "cust-1"
    assert [p["payment_id"] for p in await listed(client, "ord-1", OWNER)] == [PAY_1]


async def test_another_customers_payment_is_404_exactly_like_a_missing_one(client: httpx.AsyncClient) -> None:
    someone_elses = await client.get(f"/v1/payments/{PAY_1}", headers=bearer(OTHER_CUSTOMER))
    missing = await client.get("/v1/payments/pay_missing", headers=bearer(OTHER_CUSTOMER))

    assert someone_elses.status_code == missing.status_code == 404
    assert {k: v for k, v in someone_elses.json().items() if k not in ("detail", "instance")} == {
        k: v for k, v in missing.json().items() if k not in ("detail", "instance")
    }
    assert "cust-1" not in someone_elses.text and "ref-1" not in someone_elses.text


async def test_listing_another_customers_order_is_empty(client: httpx.AsyncClient) -> None:
    assert await listed(client, "ord-1", OTHER_CUSTOMER) == []


async def test_a_guest_reads_the_payment_of_its_order_only(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/payments/{PAY_1}", headers=bearer(GUEST_OF_ORD_1))).status_code == 200
    assert [p["order_id"] for p in await listed(client, "ord-1", GUEST_OF_ORD_1)] == ["ord-1"]

    assert (await client.get(f"/v1/payments/{PAY_1}", headers=bearer(GUEST_OF_ORD_2))).status_code == 404
    assert await listed(client, "ord-1", GUEST_OF_ORD_2) == []


async def test_the_openapi_document_lists_every_route_with_its_errors_and_examples(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    listing = document["paths"]["/v1/payments"]["get"]
    one = document["paths"]["/v1/payments/{payment_id}"]["get"]
    assert {"200", "401", "403", "422"} <= listing["responses"].keys()
    assert {"200", "401", "403", "404", "422"} <= one["responses"].keys()
    for status in ("401", "403", "404"):
        problem = one["responses"][status]["content"]["application/problem+json"]
        assert problem["example"]["status"] == int(status)
    assert listing["security"] == one["security"] == [{"HTTPBearer": []}]
    schemas = document["components"]["schemas"]
    for model in ("PaymentOut", "PaymentList", "TimelineOut"):
        assert schemas[model]["examples"], model
    assert (await client.get("/docs")).status_code == 200


async def test_a_pending_wallet_payment_shows_what_the_payer_must_do() -> None:
    store = InMemoryPaymentStore()
    payment = stored_payment("ord-1", "cust-1", "ref-1")
    waiting, decision = Payment.request(
        PaymentRequested(order_id="ord-3", customer_id="cust-1", amount_fen=500, method=PaymentMethod.ALIPAY),
        correlation_id="corr",
        now=datetime.now(UTC),
        deadline=timedelta(seconds=30),
        token_problem=None,
    )
    action = PayAction(PayActionType.REDIRECT, "https://pay.example/redirect/3")
    waiting.answered(
        decision.operations[0], ProviderReply(Outcome.PENDING, "ref-3", action), datetime.now(UTC)
    )
    for stored in (payment, waiting):
        store.payments[stored.payment_id] = stored
    app = create_app("payment", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        [item] = await listed(client, "ord-3", OWNER)

    assert item["status"] == "pending"
    assert item["action"] == {"type": "redirect", "url": "https://pay.example/redirect/3"}


# --- provider callbacks ----------------------------------------------------------------------


@pytest.fixture
async def callbacks() -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    world = make_world()
    app = create_app("payment", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(world.store))
    app.include_router(build_callback_router(world.service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield world, client


async def waiting_wallet(world: World) -> None:
    await world.handle(wallet_request())
    await world.drain()


def notification(
    outcome: str = "captured",
    amount_fen: int = 9_900,
    notification_id: str = "ntf-1",
    order_id: str = "ord-1",
) -> dict[str, Any]:
    return {
        "notification_id": notification_id,
        "payment_id": pay(order_id),
        "provider_ref": f"ref-{pay(order_id)}",
        "outcome": outcome,
        "amount_fen": amount_fen,
    }


async def post_callback(
    world: World,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    nonce: str = "nonce-1",
    signature: str = "good",
    sent_at: datetime | None = None,
    method: str = "alipay",
) -> httpx.Response:
    headers = {
        "x-signature": signature,
        "x-nonce": nonce,
        "x-sent-at": (sent_at or world.clock()).isoformat(),
    }
    return await client.post(f"/v1/payments/callbacks/{method}", content=json.dumps(body), headers=headers)


def snapshot(world: World) -> tuple[object, ...]:
    return (
        dict(world.store.payments),
        list(world.store.outbox),
        dict(world.store.queued),
        dict(world.store.nonces),
    )


async def test_a_paid_callback_authorizes_and_captures_the_wallet_payment(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    before = len(world.store.outbox)

    response = await post_callback(world, client, notification())

    assert (response.status_code, response.json()) == (200, {"status": "applied"})
    assert types(world.store.outbox[before:]) == [PaymentAuthorized.TYPE, PaymentCaptured.TYPE]
    payment = world.store.payments[pay()]
    assert (payment.status.value, payment.captured_fen) == ("captured", 9_900)


async def test_a_resent_callback_is_200_and_changes_nothing(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    await post_callback(world, client, notification(), nonce="nonce-1")
    payment, outbox = world.store.payments[pay()], list(world.store.outbox)

    again = await post_callback(world, client, notification(), nonce="nonce-2")
    other = await post_callback(world, client, notification(notification_id="ntf-2"), nonce="nonce-3")

    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert (other.status_code, other.json()) == (200, {"status": "duplicate"})
    assert world.store.payments[pay()] == payment
    assert world.store.outbox == outbox
    assert types(world.store.outbox).count(PaymentCaptured.TYPE) == 1


@pytest.mark.parametrize(
    ("tamper", "reason", "label"),
    [
        ({"signature": "forged"}, "bad signature", "bad_signature"),
        ({"sent_at": datetime(2026, 11, 25, 11, 0, tzinfo=UTC)}, "stale timestamp", "stale"),
    ],
    ids=["bad-signature", "stale"],
)
async def test_a_callback_that_does_not_verify_is_401_and_changes_nothing(
    callbacks: tuple[World, httpx.AsyncClient], tamper: dict[str, Any], reason: str, label: str
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    before = snapshot(world)
    refused = metrics.CALLBACKS_REFUSED.labels("alipay", label)
    count = refused._value.get()

    with structlog.testing.capture_logs() as logs:
        response = await post_callback(world, client, notification(), **tamper)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == reason
    assert snapshot(world) == before, "not even the nonce is recorded"
    [warning] = [entry for entry in logs if entry["event"] == "callback_refused"]
    assert (warning["log_level"], warning["method"], warning["reason"]) == ("warning", "alipay", reason)
    assert "ntf-1" not in str(logs) and "ref-" not in str(logs), "the body is never logged"
    assert refused._value.get() == count + 1
    accepted = await post_callback(world, client, notification())  # the same nonce, signed this time
    assert accepted.status_code == 200


async def test_a_replayed_callback_is_401_and_changes_nothing(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    await post_callback(world, client, notification(outcome="authorized"), nonce="nonce-1")
    before = snapshot(world)

    refused = metrics.CALLBACKS_REFUSED.labels("alipay", "replayed")
    count = refused._value.get()

    replay = await post_callback(world, client, notification(outcome="captured"), nonce="nonce-1")

    assert replay.status_code == 401
    assert replay.json()["detail"] == "replayed"
    assert snapshot(world) == before
    assert refused._value.get() == count + 1


async def test_a_callback_for_an_unknown_payment_is_404(callbacks: tuple[World, httpx.AsyncClient]) -> None:
    world, client = callbacks
    await waiting_wallet(world)

    unknown = await post_callback(world, client, notification(order_id="ord-unknown"))
    other_method = await post_callback(world, client, notification(), method="wechat_pay")

    assert unknown.status_code == other_method.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert world.store.nonces == {}


async def test_a_callback_for_an_unknown_method_is_422(callbacks: tuple[World, httpx.AsyncClient]) -> None:
    world, client = callbacks

    response = await post_callback(world, client, notification(), method="paypal")

    assert response.status_code == 422


async def test_a_payment_that_arrives_after_the_order_ended_is_refunded(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    cancelled = OrderCancelled(
        order_id="ord-1",
        order_no="20261125-000001",
        customer_id="cus-1",
        reason=OrderEndReason.PAYMENT_TIMEOUT,
    )
    await world.handle(cancelled)
    await world.drain()  # the provider closed it: the payer paid just before

    response = await post_callback(world, client, notification())
    out = await world.drain()

    assert response.status_code == 200
    assert world.alipay.made("refund") == [f"{pay()}:refund"]
    [refunded] = out
    assert (refunded.type, refunded.data["reason"]) == (PaymentRefunded.TYPE, "LATE_PAYMENT")


async def test_the_wrong_amount_paid_fails_the_payment_and_gives_it_back(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    world, client = callbacks
    await waiting_wallet(world)
    before = len(world.store.outbox)

    await post_callback(world, client, notification(amount_fen=1))
    out = await world.drain()

    assert types(world.store.outbox[before:]) == ["payment.failed", PaymentRefunded.TYPE]
    assert world.store.outbox[before].data["reason"] == "AMOUNT_MISMATCH"
    assert world.alipay.calls[-1].amount_fen == 1
    assert out[0].data["amount_fen"] == 1


async def test_the_callback_route_is_documented_without_bearer_auth(
    callbacks: tuple[World, httpx.AsyncClient],
) -> None:
    _, client = callbacks

    document = (await client.get("/openapi.json")).json()

    route = document["paths"]["/v1/payments/callbacks/{method}"]["post"]
    assert {"200", "401", "404", "422"} <= route["responses"].keys()
    assert route["responses"]["401"]["content"]["application/problem+json"]["example"]["detail"] == "replayed"
    assert "security" not in route
    assert document["components"]["schemas"]["CallbackAck"]["examples"]

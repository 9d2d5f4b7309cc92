"""The client gateway over HTTP, wired as main.py wires it, on the in-memory twins.

Rate limits count in Redis (db 15 of the local server, emptied before each test), as Throttle
cannot yet be given limits' in-memory storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage
from structlog.testing import capture_logs

from services.order.accounts import api as accounts_api
from services.order.api import GatewayLimits, PlaceOrderIn, build_router, rate_limited
from services.order.domain import OrderStatus
from services.order.handlers import OrderService, cancel_order, handle_batch
from services.order.throttle import Throttle
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import (
    AssignedCodes,
    CodesAssigned,
    FraudReason,
    MerchantUpserted,
    OrderCancelled,
    OrderEndReason,
    PayActionType,
    PaymentMethod,
    PaymentPending,
    PaymentRefunded,
    PaymentRequested,
    PriceTier,
    ProductUpserted,
    RefundReason,
    Shortage,
    StockRejected,
    decode_data,
)
from shared.crypto import PersonalData
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.accounts import InMemoryAccountStore
from tests.twins.order import InMemoryOrderNumbers, InMemoryOrderStore
from tests.unit.order.factories import (
    CLEAR_TOKEN,
    PUER_LIMIT,
    TOKEN_OPENER,
    ObservedWatch,
    authorized,
    clock_of,
    order_service,
    reserved,
    scored,
    seeded_store,
    stored,
)
from tests.unit.samples import T0, delivery

pytestmark = pytest.mark.unit

SETTINGS = SharedSettings()
ISSUER = TokenIssuer(SETTINGS)
PERSONAL = PersonalData.from_settings(SETTINGS)
PROBLEM = "application/problem+json"


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


SHOPPER = bearer(Principal("c-1", Role.CUSTOMER))
OTHER_SHOPPER = bearer(Principal("c-2", Role.CUSTOMER))
ADMIN = bearer(Principal("admin-1", Role.ADMIN))
TEA_HOUSE = bearer(Principal("u-tea", Role.MERCHANT, merchant_id="m-1"))
POTTERY = bearer(Principal("u-pot", Role.MERCHANT, merchant_id="m-2"))
ADDRESS = {
    "name": "李雷",
    "phone": "+86 138 0013 8000",
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "line1": "龙井路 1 号",
    "postal_code": "310000",
}
ORDER = {
    "items": [{"sku": "TEA", "quantity": 1}],
    "shipping_address": ADDRESS,
    "payment": {"method": "wechat_pay"},
}
CARD_ORDER = {**ORDER, "payment": {"method": "bank_card", "token": CLEAR_TOKEN}}
# A Luhn-valid test card number, as a careless client might put it where the token belongs.
PAN = "4111 1111 1111 1111"
GUEST_ORDER = {**ORDER, "contact": {"email": "Li.Lei@Example.com"}}


# --- the app ----------------------------------------------------------------------------------


@pytest.fixture
async def throttle() -> Throttle:
    return Throttle(MemoryStorage())


@pytest.fixture
async def store() -> InMemoryOrderStore:
    return await seeded_store()


@pytest.fixture
def service(store: InMemoryOrderStore) -> OrderService:
    service = order_service(store, InMemoryOrderNumbers())
    service.watch = ObservedWatch()
    return service


@pytest.fixture
def accounts() -> InMemoryAccountStore:
    return InMemoryAccountStore()


Connect = Callable[[GatewayLimits], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def connect(
    service: OrderService, accounts: InMemoryAccountStore, throttle: Throttle
) -> AsyncIterator[Connect]:
    """Opens a client on the gateway built with the given limits, closed after the test."""
    opened: list[httpx.AsyncClient] = []

    async def open_client(limits: GatewayLimits) -> httpx.AsyncClient:
        app = gateway(service, accounts, throttle, limits)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()


@pytest.fixture
async def client(connect: Connect) -> httpx.AsyncClient:
    return await connect(GatewayLimits())


def gateway(
    service: OrderService, accounts: InMemoryAccountStore, throttle: Throttle, limits: GatewayLimits
) -> FastAPI:
    """The order service's app, as main.py wires its routers."""
    app = create_app("order", readiness={}, token_verifier=TokenVerifier(SETTINGS))
    app.include_router(
        build_router(
            service, issuer=ISSUER, personal=PERSONAL, addresses=accounts, throttle=throttle, limits=limits
        )
    )
    # argon2's defaults cost ~50 ms a hash: right for production, slow for a unit suite.
    cheap = accounts_api.Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    app.include_router(
        rate_limited(
            accounts_api.build_router(accounts, ISSUER, TokenVerifier(SETTINGS), passwords=cheap),
            throttle,
            limits.per_client,
        )
    )
    return app


# --- helpers ----------------------------------------------------------------------------------


def watch_of(service: OrderService) -> ObservedWatch:
    assert isinstance(service.watch, ObservedWatch)
    return service.watch


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["type"] == f"https://errors.order-platform.example/{code}"
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body["errors"]}


async def place(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, body: dict[str, Any] = ORDER
) -> dict[str, Any]:
    response = await client.post("/v1/orders", json=body, headers=headers if headers is not None else SHOPPER)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def read(client: httpx.AsyncClient, order_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/v1/orders/{order_id}", headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def confirm(service: OrderService, order_id: str) -> None:
    await handle_batch(service, [delivery(reserved(order_id)), delivery(scored(order_id))])
    await handle_batch(service, [delivery(authorized(order_id))])


def transitions(stream: str) -> list[tuple[str, dict[str, Any]]]:
    """The (id, data) of each `transition` event in a text/event-stream body."""
    found = []
    for block in stream.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "transition":
            found.append((lines["id"], orjson.loads(lines["data"])))
    return found


# --- who may do what --------------------------------------------------------------------------


async def test_without_a_token_orders_are_neither_listed_read_followed_nor_cancelled(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    order_id = (await place(client))["order_id"]
    for method, path in [
        ("GET", "/v1/orders"),
        ("GET", f"/v1/orders/{order_id}"),
        ("GET", f"/v1/orders/{order_id}/events"),
        ("GET", "/v1/orders/by-number/20261125-000001"),
        ("POST", f"/v1/orders/{order_id}/cancel"),
    ]:
        response = await client.request(method, path)
        problem(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    bad_token = await client.get(f"/v1/orders/{order_id}", headers={"Authorization": "Bearer not-a-jwt"})
    problem(bad_token, 401, "unauthenticated")
    no_contact = await client.post("/v1/orders", json=ORDER)
    assert "contact" in problem(no_contact, 401, "unauthenticated")["detail"]
    assert len(store.orders) == 1


async def test_another_customers_order_is_not_found_to_read_follow_or_cancel(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    accepted = await place(client)
    order_id = accepted["order_id"]
    never_placed = problem(await client.get("/v1/orders/o-never-placed", headers=OTHER_SHOPPER), 404)
    for method, path in [
        ("GET", f"/v1/orders/{order_id}"),
        ("GET", f"/v1/orders/{order_id}/events"),
        ("GET", f"/v1/orders/by-number/{accepted['order_no']}"),
        ("POST", f"/v1/orders/{order_id}/cancel"),
    ]:
        body = problem(await client.request(method, path, headers=OTHER_SHOPPER), 404, "order-not-found")
        assert body["title"] == never_placed["title"]
    assert (await stored(service, order_id)).status is OrderStatus.PENDING
    assert (await client.get("/v1/orders", headers=OTHER_SHOPPER)).json()["items"] == []


async def test_a_customer_orders_only_in_their_own_name(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    refused = await client.post("/v1/orders", json={**ORDER, "customer_id": "c-2"}, headers=SHOPPER)
    problem(refused, 403, "forbidden")
    assert store.orders == {}
    accepted = await place(client, body={**ORDER, "customer_id": "c-1"})
    assert (await read(client, accepted["order_id"], SHOPPER))["customer_id"] == "c-1"
    assert accepted["access_token"] is None


async def test_an_admin_orders_on_a_named_customers_behalf(client: httpx.AsyncClient) -> None:
    unnamed = await client.post("/v1/orders", json=ORDER, headers=ADMIN)
    assert fields_of(problem(unnamed, 422)) == {"customer_id"}
    accepted = await place(client, ADMIN, {**ORDER, "customer_id": "c-9"})
    assert (await read(client, accepted["order_id"], ADMIN))["customer_id"] == "c-9"


async def test_a_merchant_sees_the_orders_holding_its_products_and_no_others(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    tea = (await place(client))["order_id"]
    clock_of(service).now = T0 + timedelta(minutes=1)
    tea_and_cup = [{"sku": "TEA", "quantity": 1}, {"sku": "CUP", "quantity": 1}]
    both = (await place(client, body={**ORDER, "items": tea_and_cup}))["order_id"]
    assert (await read(client, tea, TEA_HOUSE))["order_id"] == tea
    problem(await client.get(f"/v1/orders/{tea}", headers=POTTERY), 404, "order-not-found")
    assert (await read(client, both, POTTERY))["order_id"] == both

    def listed(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [order["order_id"] for order in response.json()["items"]]

    assert listed(await client.get("/v1/orders", headers=TEA_HOUSE)) == [both, tea]
    assert listed(await client.get("/v1/orders", headers=POTTERY)) == [both]
    problem(await client.post(f"/v1/orders/{tea}/cancel", headers=TEA_HOUSE), 403, "forbidden")
    problem(await client.post("/v1/orders", json=ORDER, headers=TEA_HOUSE), 403, "forbidden")


async def test_an_admin_reads_the_risk_and_internal_detail_a_customer_does_not(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    approval = scored(order_id, score=42, reasons=[FraudReason.AMOUNT_HIGH])
    await handle_batch(service, [delivery(reserved(order_id)), delivery(approval)])

    as_admin = await read(client, order_id, ADMIN)
    assert as_admin["risk"] == {"stock": "passed", "fraud": "passed", "fraud_score": 42}
    assert "risk approved (risk score 42: AMOUNT_HIGH)" in [entry["detail"] for entry in as_admin["timeline"]]

    response = await client.get(f"/v1/orders/{order_id}", headers=SHOPPER)
    as_customer = response.json()
    assert as_customer["risk"] is None
    assert [entry["detail"] for entry in as_customer["timeline"]] == [None] * 4
    assert [entry["note"] for entry in as_customer["timeline"]] == [e["note"] for e in as_admin["timeline"]]
    assert "AMOUNT_HIGH" not in response.text and "risk score" not in response.text


# --- guests -----------------------------------------------------------------------------------


async def test_a_guest_order_answers_a_token_that_reaches_that_order_only(
    client: httpx.AsyncClient,
) -> None:
    someone_elses = (await place(client))["order_id"]
    accepted = await place(client, headers={}, body=GUEST_ORDER)
    assert accepted["status"] == "PENDING" and accepted["access_token"]
    guest = {"Authorization": f"Bearer {accepted['access_token']}"}

    mine = await read(client, accepted["order_id"], guest)
    assert mine["risk"] is None and mine["order_no"] == accepted["order_no"]
    assert mine["customer_id"].startswith("guest-")
    problem(await client.get(f"/v1/orders/{someone_elses}", headers=guest), 404, "order-not-found")
    problem(await client.get("/v1/orders", headers=guest), 403, "forbidden")
    problem(await client.post("/v1/orders", json=ORDER, headers=guest), 403, "forbidden")
    cancelled = await client.post(f"/v1/orders/{accepted['order_id']}/cancel", headers=guest)
    assert cancelled.status_code == 200 and cancelled.json()["reason"] == "CUSTOMER_CANCELLED"


async def test_a_guest_names_a_contact_and_neither_a_customer_nor_a_saved_address(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    as_customer = await client.post("/v1/orders", json={**GUEST_ORDER, "customer_id": "c-1"})
    problem(as_customer, 401, "unauthenticated")
    saved = {key: value for key, value in GUEST_ORDER.items() if key != "shipping_address"}
    with_saved = await client.post("/v1/orders", json={**saved, "address_id": "addr-1"})
    assert fields_of(problem(with_saved, 422)) == {"address_id"}
    both = await client.post(
        "/v1/orders", json={**GUEST_ORDER, "contact": {"email": "a@b.cn", "phone": "13800138000"}}
    )
    assert fields_of(problem(both, 422)) == {"contact"}
    customer_with_contact = await client.post("/v1/orders", json=GUEST_ORDER, headers=SHOPPER)
    assert fields_of(problem(customer_with_contact, 422)) == {"contact"}
    assert store.orders == {}


async def test_a_guest_finds_the_order_again_by_number_and_contact_and_wrong_ones_look_alike(
    client: httpx.AsyncClient,
) -> None:
    accepted = await place(client, headers={}, body=GUEST_ORDER)
    customers = await place(client)
    contact = {"email": "li.lei@example.com"}

    found = await client.post(
        "/v1/orders/lookup", json={"order_no": accepted["order_no"], "contact": contact}
    )
    assert found.status_code == 200, found.text
    assert found.json()["order"]["order_id"] == accepted["order_id"]
    assert found.json()["order"]["risk"] is None
    guest = {"Authorization": f"Bearer {found.json()['access_token']}"}
    assert (await read(client, accepted["order_id"], guest))["order_no"] == accepted["order_no"]

    wrong_number = await client.post(
        "/v1/orders/lookup", json={"order_no": "20261125-000099", "contact": contact}
    )
    wrong_contact = await client.post(
        "/v1/orders/lookup", json={"order_no": accepted["order_no"], "contact": {"phone": "13900139000"}}
    )
    not_a_guests = await client.post(
        "/v1/orders/lookup", json={"order_no": customers["order_no"], "contact": contact}
    )
    answers = [problem(r, 404, "order-not-found") for r in (wrong_number, wrong_contact, not_a_guests)]
    assert answers[0] == answers[1] == answers[2]


async def test_looking_up_one_order_number_too_often_is_throttled(connect: Connect) -> None:
    client = await connect(GatewayLimits(lookup_per_order="2/hour"))
    accepted = await place(client, headers={}, body=GUEST_ORDER)
    guess = {"order_no": accepted["order_no"], "contact": {"phone": "13900139000"}}
    for _ in range(2):
        problem(await client.post("/v1/orders/lookup", json=guess), 404)
    throttled = await client.post(
        "/v1/orders/lookup", json={**guess, "contact": {"email": "li.lei@example.com"}}
    )
    problem(throttled, 429, "too-many-requests")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 3600


# --- what a request gets wrong ----------------------------------------------------------------


async def test_one_422_names_a_bad_phone_a_missing_district_and_a_quantity_over_the_limit(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    address = {key: value for key, value in ADDRESS.items() if key != "district"}
    body = {
        **ORDER,
        "items": [{"sku": "PUER", "quantity": PUER_LIMIT + 1}],
        "shipping_address": {**address, "phone": "12345"},
    }
    response = await client.post("/v1/orders", json=body, headers=SHOPPER)
    answer = problem(response, 422, "invalid-order")
    assert fields_of(answer) == {"shipping_address.phone", "shipping_address.district", "items.0.quantity"}
    quantity = next(e for e in answer["errors"] if e["field"] == "items.0.quantity")
    assert f"at most {PUER_LIMIT}" in quantity["message"]
    assert store.orders == {}


async def test_a_well_formed_order_the_catalog_refuses_names_each_field(
    client: httpx.AsyncClient, service: OrderService, store: InMemoryOrderStore
) -> None:
    terms = MerchantUpserted(merchant_id="m-1", name="Tea house", payment_methods=[PaymentMethod.ALIPAY])
    await handle_batch(service, [delivery(terms)])
    body = {**ORDER, "items": [{"sku": "TEA", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]}
    answer = problem(await client.post("/v1/orders", json=body, headers=SHOPPER), 422, "invalid-order")
    assert fields_of(answer) == {"items.1.sku", "payment.method"}
    assert store.orders == {}


async def test_a_body_over_one_mebibyte_is_413_and_places_nothing(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    padded = {**ORDER, "payment": {"method": "alipay", "token": "x" * (1024 * 1024)}}
    response = await client.post("/v1/orders", json=padded, headers=SHOPPER)
    problem(response, 413, "request-too-large")
    assert store.orders == {}


async def test_an_order_may_name_a_saved_address_of_its_customer(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    saved = await client.post("/v1/me/addresses", json={**ADDRESS, "label": "home"}, headers=SHOPPER)
    assert saved.status_code == 201, saved.text
    by_id = {key: value for key, value in ORDER.items() if key != "shipping_address"}
    accepted = await place(client, body={**by_id, "address_id": saved.json()["address_id"]})
    shipped_to = (await read(client, accepted["order_id"], SHOPPER))["shipping_address"]
    assert shipped_to == {**ADDRESS, "phone": "13800138000"}

    theirs = await client.post(
        "/v1/orders", json={**by_id, "address_id": saved.json()["address_id"]}, headers=OTHER_SHOPPER
    )
    assert fields_of(problem(theirs, 422)) == {"address_id"}
    both = await client.post(
        "/v1/orders", json={**ORDER, "address_id": saved.json()["address_id"]}, headers=SHOPPER
    )
    problem(both, 422)


# --- idempotency ------------------------------------------------------------------------------


async def test_five_concurrent_posts_with_one_key_make_one_order_and_all_answer_it(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    keyed = {**SHOPPER, "Idempotency-Key": "checkout-1"}
    answers = await asyncio.gather(*(client.post("/v1/orders", json=ORDER, headers=keyed) for _ in range(5)))
    assert [answer.status_code for answer in answers] == [202] * 5
    assert len({answer.json()["order_id"] for answer in answers}) == 1
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers].count("true") == 4
    assert len(store.orders) == 1

    changed = {**ORDER, "items": [{"sku": "TEA", "quantity": 2}]}
    problem(await client.post("/v1/orders", json=changed, headers=keyed), 422, "idempotency-key-reused")
    theirs = await client.post(
        "/v1/orders", json=ORDER, headers={**OTHER_SHOPPER, "Idempotency-Key": "checkout-1"}
    )
    assert theirs.status_code == 202 and theirs.json()["order_id"] != answers[0].json()["order_id"]


# --- listing ----------------------------------------------------------------------------------


async def test_a_customer_pages_through_their_orders_newest_first_with_a_cursor(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    placed = []
    for minute in range(5):
        clock_of(service).now = T0 + timedelta(minutes=minute)
        placed.append((await place(client))["order_id"])
    await place(client, OTHER_SHOPPER)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/orders", params=params, headers=SHOPPER)).json()
        seen += [order["order_id"] for order in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == placed[::-1] and pages == 3

    since = (T0 + timedelta(minutes=3)).isoformat()
    recent = (await client.get("/v1/orders", params={"created_from": since}, headers=SHOPPER)).json()
    assert [order["order_id"] for order in recent["items"]] == placed[:2:-1]
    await cancel_order(service, placed[1])
    cancelled = (await client.get("/v1/orders", params={"status": "CANCELLED"}, headers=SHOPPER)).json()
    assert [order["order_id"] for order in cancelled["items"]] == [placed[1]]


async def test_listing_refuses_other_customers_bad_cursors_and_times_without_a_zone(
    client: httpx.AsyncClient,
) -> None:
    await place(client)
    problem(await client.get("/v1/orders", params={"customer_id": "c-2"}, headers=SHOPPER), 403, "forbidden")
    problem(
        await client.get("/v1/orders", params={"cursor": "not*a*cursor"}, headers=SHOPPER),
        422,
        "invalid-cursor",
    )
    naive = await client.get("/v1/orders", params={"created_from": "2026-11-25T12:00:00"}, headers=SHOPPER)
    problem(naive, 422)
    for customer_id, expected in (("c-1", ["c-1"]), ("c-2", [])):
        listed = await client.get("/v1/orders", params={"customer_id": customer_id}, headers=ADMIN)
        assert [order["customer_id"] for order in listed.json()["items"]] == expected


# --- following an order -----------------------------------------------------------------------


@pytest.fixture
def woken_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting requests re-read the order only when woken (not every second, as they do for
    changes other replicas make), so a test passes only if this process's changes wake them."""
    monkeypatch.setattr("services.order.api.REREAD_INTERVAL_S", 60.0)


@pytest.mark.usefixtures("woken_only")
async def test_a_long_poll_answers_as_soon_as_the_order_is_confirmed(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    watch = watch_of(service)
    poll = asyncio.create_task(
        client.get(f"/v1/orders/{order_id}", params={"wait_for": "CONFIRMED", "timeout": 10}, headers=SHOPPER)
    )
    await watch.waited(order_id)
    await handle_batch(service, [delivery(reserved(order_id)), delivery(scored(order_id))])
    await watch.waited(order_id, 2)  # woken, re-read AWAITING_PAYMENT, and waiting again
    assert not poll.done()
    await handle_batch(service, [delivery(authorized(order_id))])

    answer = await asyncio.wait_for(poll, 5)
    assert answer.status_code == 200 and answer.json()["status"] == "CONFIRMED"


@pytest.mark.usefixtures("woken_only")
async def test_a_long_poll_answers_when_the_order_ends_another_way(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    poll = asyncio.create_task(
        client.get(f"/v1/orders/{order_id}", params={"wait_for": "CONFIRMED", "timeout": 10}, headers=SHOPPER)
    )
    await watch_of(service).waited(order_id)
    await cancel_order(service, order_id)
    answer = await asyncio.wait_for(poll, 5)
    assert (answer.json()["status"], answer.json()["reason"]) == ("CANCELLED", "CUSTOMER_CANCELLED")


async def test_a_long_poll_answers_the_order_as_it_is_when_its_time_is_up(client: httpx.AsyncClient) -> None:
    order_id = (await place(client))["order_id"]
    answer = await client.get(
        f"/v1/orders/{order_id}", params={"wait_for": "CONFIRMED", "timeout": 0.05}, headers=SHOPPER
    )
    assert answer.status_code == 200 and answer.json()["status"] == "PENDING"
    too_long = await client.get(
        f"/v1/orders/{order_id}", params={"wait_for": "CONFIRMED", "timeout": 31}, headers=SHOPPER
    )
    problem(too_long, 422)


@pytest.mark.usefixtures("woken_only")
async def test_the_event_stream_pushes_every_transition_and_ends_at_the_final_state(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    watch = watch_of(service)
    stream = asyncio.create_task(client.get(f"/v1/orders/{order_id}/events", headers=SHOPPER))
    await watch.waited(order_id)
    await handle_batch(service, [delivery(reserved(order_id))])
    await watch.waited(order_id, 2)
    await handle_batch(service, [delivery(scored(order_id))])
    await watch.waited(order_id, 3)
    await handle_batch(service, [delivery(authorized(order_id))])

    response = await asyncio.wait_for(stream, 5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = transitions(response.text)
    assert [(position, entry["cause"], entry["status"]) for position, entry in events] == [
        ("0", "order.placed", "PENDING"),
        ("1", "inventory.stock_reserved", "PENDING"),
        ("2", "fraud.scored", "PENDING"),
        ("3", "order.payment_requested", "AWAITING_PAYMENT"),
        ("4", "payment.authorized", "CONFIRMED"),
    ]
    assert all(entry["detail"] is None and entry["note"] for _, entry in events)


async def test_the_event_stream_resumes_after_the_last_event_id(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    await confirm(service, order_id)
    resumed = await client.get(f"/v1/orders/{order_id}/events", headers={**ADMIN, "Last-Event-ID": "2"})
    events = transitions(resumed.text)
    assert [position for position, _ in events] == ["3", "4"]
    assert events[0][1]["detail"], "an admin's stream carries the internal detail"


# --- the payment ------------------------------------------------------------------------------


async def test_a_card_payment_without_a_token_is_one_422_on_the_token_and_places_nothing(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    body = {**ORDER, "payment": {"method": "bank_card"}, "items": [{"sku": "NOPE", "quantity": 1}]}
    answer = problem(await client.post("/v1/orders", json=body, headers=SHOPPER), 422, "invalid-order")
    assert fields_of(answer) == {"payment.token", "items.0.sku"}, "one 422 names every problem"
    token = next(e for e in answer["errors"] if e["field"] == "payment.token")
    assert "bank_card needs the payment provider's token" in token["message"]
    assert store.orders == {}


@pytest.mark.parametrize("method", ["bank_card", "alipay"])
async def test_a_card_number_sent_as_the_token_is_refused_and_never_repeated_nor_logged(
    client: httpx.AsyncClient, store: InMemoryOrderStore, method: str
) -> None:
    body = {**ORDER, "payment": {"method": method, "token": PAN}}
    with capture_logs() as logs:
        response = await client.post("/v1/orders", json=body, headers=SHOPPER)
    answer = problem(response, 422, "invalid-order")
    assert fields_of(answer) == {"payment.token"}
    assert "looks like a card number" in answer["errors"][0]["message"]
    digits = PAN.replace(" ", "")
    for shown in (response.text, repr(logs)):
        assert PAN not in shown and digits not in shown
    assert store.orders == {}


async def test_a_wallet_payment_needs_no_token_and_keeps_none_it_is_given(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    without = await place(client, body={**ORDER, "payment": {"method": "alipay"}})
    assert (await stored(service, without["order_id"])).payment_token is None
    given = await place(client, body={**ORDER, "payment": {"method": "wechat_pay", "token": "tok_unused"}})
    assert (await stored(service, given["order_id"])).payment_token is None


async def test_a_card_token_is_stored_only_sealed_for_the_payment_service(
    client: httpx.AsyncClient, service: OrderService, store: InMemoryOrderStore
) -> None:
    with capture_logs() as logs:
        order_id = (await place(client, body=CARD_ORDER))["order_id"]
    sealed = (await stored(service, order_id)).payment_token
    assert sealed is not None and CLEAR_TOKEN not in sealed
    assert TOKEN_OPENER.open(sealed) == CLEAR_TOKEN
    assert CLEAR_TOKEN not in (await client.get(f"/v1/orders/{order_id}", headers=ADMIN)).text
    assert CLEAR_TOKEN not in repr(logs)
    await handle_batch(service, [delivery(reserved(order_id)), delivery(scored(order_id))])
    [requested] = [e for e in map(decode_data, store.outbox) if isinstance(e, PaymentRequested)]
    assert requested.sealed_token == sealed
    assert (await stored(service, order_id)).payment_token is None


async def test_a_replay_of_a_card_order_answers_the_first_order_though_each_seal_differs(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    key = {**SHOPPER, "Idempotency-Key": "card-1"}
    first = await client.post("/v1/orders", json=CARD_ORDER, headers=key)
    again = await client.post("/v1/orders", json=CARD_ORDER, headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["order_id"] == again.json()["order_id"] and len(store.orders) == 1
    other_card = {**CARD_ORDER, "payment": {"method": "bank_card", "token": "tok_other"}}
    problem(await client.post("/v1/orders", json=other_card, headers=key), 422, "idempotency-key-reused")


async def test_the_order_shows_its_payment_from_not_requested_to_pending_to_refunded(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client, body={**ORDER, "payment": {"method": "alipay"}}))["order_id"]
    payment = (await read(client, order_id, SHOPPER))["payment"]
    assert payment == {"method": "alipay", "status": "not_requested", "action": None, "refunded_fen": 0}
    await handle_batch(service, [delivery(reserved(order_id)), delivery(scored(order_id))])
    assert (await read(client, order_id, SHOPPER))["payment"]["status"] == "requested"
    pending = PaymentPending(
        order_id=order_id,
        payment_id="pay-1",
        method=PaymentMethod.ALIPAY,
        amount_fen=8800,
        action_type=PayActionType.REDIRECT,
        action_url="https://pay.example/alipay/1",
    )
    await handle_batch(service, [delivery(pending)])
    seen = await read(client, order_id, SHOPPER)
    assert seen["payment"] == {
        "method": "alipay",
        "status": "pending",
        "action": {"type": "redirect", "url": "https://pay.example/alipay/1"},
        "refunded_fen": 0,
    }
    assert seen["timeline"][-1]["note"] == "Follow the link to pay ¥88.00 with Alipay."
    await handle_batch(service, [delivery(authorized(order_id))])
    refunded = PaymentRefunded(
        order_id=order_id,
        payment_id="pay-1",
        refund_id="rf-1",
        customer_id="c-1",
        amount_fen=8800,
        refunded_total_fen=8800,
        captured_fen=8800,
        reason=RefundReason.REQUESTED,
    )
    await handle_batch(service, [delivery(refunded)])
    [listed] = (await client.get("/v1/orders", headers=SHOPPER)).json()["items"]
    assert listed["payment"] == {
        "method": "alipay",
        "status": "refunded",
        "action": None,
        "refunded_fen": 8800,
    }


def test_every_order_request_example_in_the_openapi_document_is_a_valid_request() -> None:
    examples = PlaceOrderIn.model_json_schema()["examples"]
    for example in examples:
        PlaceOrderIn.model_validate(example)
    assert {"method": "alipay"} in [example["payment"] for example in examples], "a wallet needs no token"


# --- cancelling -------------------------------------------------------------------------------


async def test_a_customer_cancels_before_paying_and_again_changes_nothing(
    client: httpx.AsyncClient, store: InMemoryOrderStore
) -> None:
    order_id = (await place(client))["order_id"]
    first = await client.post(f"/v1/orders/{order_id}/cancel", headers=SHOPPER)
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["reason"]) == ("CANCELLED", "CUSTOMER_CANCELLED")
    again = await client.post(f"/v1/orders/{order_id}/cancel", headers=SHOPPER)
    assert again.json() == first.json()
    ends = [e for e in map(decode_data, store.outbox) if isinstance(e, OrderCancelled)]
    assert [(e.order_id, e.reason) for e in ends] == [(order_id, OrderEndReason.CUSTOMER_CANCELLED)]


async def test_a_confirmed_order_cannot_be_cancelled_yet(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    await confirm(service, order_id)
    refused = problem(
        await client.post(f"/v1/orders/{order_id}/cancel", headers=SHOPPER), 409, "cannot-cancel"
    )
    assert "refund" in refused["detail"]
    assert (await read(client, order_id, SHOPPER))["status"] == "CONFIRMED"


# --- the catalog ------------------------------------------------------------------------------


async def test_anyone_browses_the_orderable_products_with_their_limits(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/products")).json()["items"]
    assert {item["sku"]: item["max_per_order"] for item in listed} == {
        "CUP": 999,
        "PUER": PUER_LIMIT,
        "TEA": 999,
    }
    assert (await client.get("/v1/products/PUER")).json()["price_fen"] == 12800
    problem(await client.get("/v1/products/OLD"), 404, "product-not-found")


async def test_the_product_listing_shows_price_tiers(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    tiers = [{"min_quantity": 3, "unit_price_fen": 900}, {"min_quantity": 10, "unit_price_fen": 800}]
    tiered = ProductUpserted(
        sku="TIN",
        name="Tea tin",
        merchant_id="m-1",
        price_fen=1000,
        price_tiers=[PriceTier(**t) for t in tiers],
    )
    await handle_batch(service, [delivery(tiered)])

    listed = {item["sku"]: item["price_tiers"] for item in (await client.get("/v1/products")).json()["items"]}
    assert listed == {"CUP": [], "PUER": [], "TEA": [], "TIN": tiers}
    assert (await client.get("/v1/products/TIN")).json()["price_tiers"] == tiers


# --- a virtual product's codes ------------------------------------------------------------------


async def test_the_buyer_alone_reads_the_codes_others_see_how_many(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    order_id = (await place(client))["order_id"]
    await confirm(service, order_id)
    sealed = [PERSONAL.seal("GIFT-0001-AAAA"), PERSONAL.seal("GIFT-0002-BBBB")]
    assigned = CodesAssigned(
        order_id=order_id, customer_id="c-1", lines=[AssignedCodes(sku="TEA", sealed_codes=sealed)]
    )
    await handle_batch(service, [delivery(assigned)])
    await handle_batch(service, [delivery(assigned)])  # announced again: kept once

    as_buyer = await read(client, order_id, SHOPPER)
    assert as_buyer["codes"] == [{"sku": "TEA", "count": 2, "codes": ["GIFT-0001-AAAA", "GIFT-0002-BBBB"]}]
    assert as_buyer["status"] == "CONFIRMED", "codes do not move the order's status"
    assert [e["cause"] for e in as_buyer["timeline"]].count("inventory.codes_assigned") == 1
    for other in (ADMIN, TEA_HOUSE):
        response = await client.get(f"/v1/orders/{order_id}", headers=other)
        assert response.json()["codes"] == [{"sku": "TEA", "count": 2, "codes": None}]
        assert "GIFT-000" not in response.text
    problem(await client.get(f"/v1/orders/{order_id}", headers=OTHER_SHOPPER), 404, "order-not-found")
    listed = await client.get("/v1/orders", headers=SHOPPER)
    assert "GIFT-000" not in listed.text, "a listing counts codes; only the order itself shows them"


# --- catalog details, per-product payment methods, substitutes -----------------------------------------


GREEN_TEA = ProductUpserted(
    sku="BILUO",
    name="Biluochun",
    merchant_id="m-2",
    price_fen=9000,
    description="Spring picking",
    category="tea/green",
    attributes={"origin": "Suzhou"},
    payment_methods=[PaymentMethod.ALIPAY],
)


async def test_the_product_views_show_description_category_attributes_and_payment_methods(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    await handle_batch(service, [delivery(GREEN_TEA)])

    shown = (await client.get("/v1/products/BILUO")).json()

    assert {k: shown[k] for k in ("description", "category", "attributes", "payment_methods")} == {
        "description": "Spring picking",
        "category": "tea/green",
        "attributes": {"origin": "Suzhou"},
        "payment_methods": ["alipay"],
    }
    listed = {
        item["sku"]: item["payment_methods"] for item in (await client.get("/v1/products")).json()["items"]
    }
    assert listed["TEA"] == []  # none of its own: whatever its merchant accepts


async def test_a_method_a_product_does_not_accept_is_refused_naming_the_sku_and_method(
    client: httpx.AsyncClient, service: OrderService, store: InMemoryOrderStore
) -> None:
    await handle_batch(service, [delivery(GREEN_TEA)])
    body = {**ORDER, "items": [{"sku": "TEA", "quantity": 1}, {"sku": "BILUO", "quantity": 1}]}

    answer = problem(await client.post("/v1/orders", json=body, headers=SHOPPER), 422, "invalid-order")

    assert fields_of(answer) == {"payment.method"}
    assert "wechat_pay is not accepted for BILUO" in answer["detail"]
    assert (await client.get("/v1/orders", headers=SHOPPER)).json()["items"] == []
    accepted = await place(client, body={**body, "payment": {"method": "alipay"}})
    assert accepted["status"] == "PENDING"


async def test_a_rejected_order_shows_the_substitutes_the_replica_lists_with_name_and_price(
    client: httpx.AsyncClient, service: OrderService
) -> None:
    delisted = ProductUpserted(sku="GONE", name="Gone", merchant_id="m-1", price_fen=1, active=False)
    await handle_batch(service, [delivery(GREEN_TEA), delivery(delisted)])
    order_id = (await place(client))["order_id"]
    shortage = Shortage(sku="TEA", quantity=1, available=0)
    rejection = StockRejected(
        order_id=order_id, shortages=[shortage], substitutes=["BILUO", "UNKNOWN", "GONE", "CUP"]
    )

    await handle_batch(service, [delivery(rejection)])

    seen = await read(client, order_id, SHOPPER)
    assert (seen["status"], seen["reason"]) == ("REJECTED", "OUT_OF_STOCK")
    assert seen["substitutes"] == [
        {
            "sku": "BILUO",
            "name": "Biluochun",
            "merchant_id": "m-2",
            "price_fen": 9000,
            "category": "tea/green",
        },
        {"sku": "CUP", "name": "Celadon cup", "merchant_id": "m-2", "price_fen": 4550, "category": ""},
    ]
    [listed] = (await client.get("/v1/orders", headers=SHOPPER)).json()["items"]
    assert listed["substitutes"] == seen["substitutes"]

"""The account routes over HTTP, with the in-memory twin and a cheap argon2 setting."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest
from argon2 import PasswordHasher
from structlog.testing import capture_logs

from services.order.accounts.api import Passwords, build_router
from services.order.accounts.domain import MAX_ADDRESSES
from shared.auth import InvalidToken, Principal, Role, TokenIssuer, TokenUse, TokenVerifier
from shared.http import create_app
from shared.settings import SharedSettings
from tests.twins.accounts import InMemoryAccountStore

pytestmark = pytest.mark.unit

SETTINGS = SharedSettings()
ISSUER = TokenIssuer(SETTINGS)
VERIFIER = TokenVerifier(SETTINGS)
PASSWORD = "correct horse battery"
PHONE = "+86 138 0013 8000"
ADDRESS = {
    "name": "李雷",
    "phone": "+86 139-0013-9000",
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "line1": "龙井路 1 号",
    "postal_code": "310000",
}


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    # argon2's defaults cost ~50 ms and 64 MiB a hash: right for production, slow for a unit suite.
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1)


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(str(hash))
        return super().verify(hash, password)


def app_with(store: InMemoryAccountStore, hasher: PasswordHasher) -> httpx.AsyncClient:
    app = create_app("order", readiness={}, token_verifier=VERIFIER)
    app.include_router(build_router(store, ISSUER, VERIFIER, passwords=Passwords(hasher)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def store() -> InMemoryAccountStore:
    return InMemoryAccountStore()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
async def client(store: InMemoryAccountStore, hasher: CountingHasher) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(store, hasher) as client:
        yield client


async def register(client: httpx.AsyncClient, login: str = PHONE, password: str = PASSWORD) -> str:
    response = await client.post("/v1/auth/register", json={"login": login, "password": password})
    assert response.status_code == 201, response.text
    return str(response.json()["customer_id"])


async def sign_in(client: httpx.AsyncClient, login: str = PHONE, password: str = PASSWORD) -> httpx.Response:
    return await client.post(
        "/v1/auth/token", data={"grant_type": "password", "username": login, "password": password}
    )


async def trade(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


async def bearer_for(client: httpx.AsyncClient, login: str = PHONE) -> dict[str, str]:
    await register(client, login)
    answer = (await sign_in(client, login)).json()
    return {"Authorization": f"Bearer {answer['access_token']}"}


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.access_token(principal)}"}


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


# --- register ----------------------------------------------------------------------------------


async def test_registering_with_a_phone_stores_it_normalised_with_an_argon2_hash(
    client: httpx.AsyncClient, store: InMemoryAccountStore
) -> None:
    response = await client.post("/v1/auth/register", json={"login": PHONE, "password": PASSWORD})

    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"cust-[0-9a-f]{32}", body["customer_id"])
    assert (body["login"], body["login_kind"]) == ("13800138000", "phone")
    account = store.accounts[body["customer_id"]]
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash


async def test_registering_with_an_email_lower_cases_it(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/auth/register", json={"login": "Li.Lei@Example.COM", "password": PASSWORD}
    )

    assert (response.json()["login"], response.json()["login_kind"]) == ("li.lei@example.com", "email")


@pytest.mark.parametrize(
    ("first", "again"), [(PHONE, "138-0013-8000"), ("li.lei@example.com", "LI.LEI@example.com")]
)
async def test_the_same_login_again_in_any_spelling_is_a_409(
    client: httpx.AsyncClient, store: InMemoryAccountStore, first: str, again: str
) -> None:
    await register(client, first)

    response = await client.post("/v1/auth/register", json={"login": again, "password": "another password"})

    assert response.status_code == 409
    problem = problem_of(response)
    assert problem["type"].endswith("/login-taken")
    assert "exists already" in problem["detail"] and "POST /v1/auth/token" in problem["detail"]
    assert len(store.accounts) == 1


async def test_a_bad_login_and_a_short_password_are_both_named_in_one_422(
    client: httpx.AsyncClient, store: InMemoryAccountStore
) -> None:
    response = await client.post("/v1/auth/register", json={"login": "12345", "password": "short"})

    assert response.status_code == 422
    errors = {e["field"]: e["message"] for e in problem_of(response)["errors"]}
    assert set(errors) == {"login", "password"}
    assert "mainland China mobile number" in errors["login"]
    assert errors["password"] == "a password has 10 to 128 characters"
    assert store.accounts == {}


async def test_a_missing_password_and_an_unknown_field_are_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/register", json={"login": PHONE, "nickname": "li"})

    assert response.status_code == 422
    assert {e["field"] for e in problem_of(response)["errors"]} == {"password", "nickname"}


# --- token: password grant ----------------------------------------------------------------------


async def test_the_password_grant_answers_a_customer_access_token_and_a_refresh_token(
    client: httpx.AsyncClient,
) -> None:
    customer_id = await register(client)

    response = await sign_in(client, login="13800138000")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("bearer", 3600)
    assert await VERIFIER.verify(body["access_token"]) == Principal(customer_id, Role.CUSTOMER)
    refreshed = await VERIFIER.verify(body["refresh_token"], use=TokenUse.REFRESH)
    assert refreshed.subject == customer_id


async def test_a_wrong_password_and_an_unknown_login_get_the_same_401(
    client: httpx.AsyncClient, hasher: CountingHasher
) -> None:
    await register(client)
    hasher.verified.clear()

    wrong_password = await sign_in(client, password="not the password")
    unknown_login = await sign_in(client, login="13900139000")
    not_a_login = await sign_in(client, login="nobody")

    answers = [wrong_password, unknown_login, not_a_login]
    assert [a.status_code for a in answers] == [401, 401, 401]
    bodies = [problem_of(a) for a in answers]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["detail"] == "the login or the password is wrong"
    assert bodies[0]["error"] == "invalid_grant"  # what OAuth2 client libraries look for
    # Each ran argon2 once, the unknown logins against a decoy hash: no timing tells them apart.
    assert len(hasher.verified) == 3
    assert hasher.verified[1] == hasher.verified[2] != hasher.verified[0]


async def test_the_password_grant_without_a_password_names_the_missing_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/auth/token", data={"grant_type": "password", "username": PHONE})

    assert response.status_code == 422
    assert [e["field"] for e in problem_of(response)["errors"]] == ["password"]


async def test_an_unsupported_grant_type_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/token", data={"grant_type": "client_credentials"})

    assert response.status_code == 422
    assert [e["field"] for e in problem_of(response)["errors"]] == ["grant_type"]


async def test_a_hash_made_with_older_parameters_is_replaced_at_sign_in(store: InMemoryAccountStore) -> None:
    async with app_with(store, cheap_hasher(time_cost=1)) as before:
        customer_id = await register(before)
    old_hash = store.accounts[customer_id].password_hash

    async with app_with(store, cheap_hasher(time_cost=2)) as after:
        assert (await sign_in(after)).status_code == 200
        new_hash = store.accounts[customer_id].password_hash
        assert ",t=2," in new_hash and ",t=1," in old_hash
        assert (await sign_in(after)).status_code == 200


async def test_a_current_hash_is_left_alone_at_sign_in(
    client: httpx.AsyncClient, store: InMemoryAccountStore
) -> None:
    customer_id = await register(client)
    stored = store.accounts[customer_id].password_hash

    await sign_in(client)

    assert store.accounts[customer_id].password_hash == stored


async def test_no_personal_data_reaches_the_logs(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await register(client)
        await sign_in(client)
        await sign_in(client, password="not the password")

    assert {entry["event"] for entry in logs} >= {"account_registered", "signed_in", "sign_in_refused"}
    assert "13800138000" not in repr(logs) and PASSWORD not in repr(logs)


# --- token: refresh grant -----------------------------------------------------------------------


async def test_the_refresh_grant_answers_new_tokens_for_the_same_customer(client: httpx.AsyncClient) -> None:
    customer_id = await register(client)
    first = (await sign_in(client)).json()

    response = await trade(client, first["refresh_token"])

    assert response.status_code == 200
    assert await VERIFIER.verify(response.json()["access_token"]) == Principal(customer_id, Role.CUSTOMER)
    refreshed = await VERIFIER.verify(response.json()["refresh_token"], use=TokenUse.REFRESH)
    assert refreshed.subject == customer_id


async def test_an_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    await register(client)
    access = (await sign_in(client)).json()["access_token"]

    response = await trade(client, access)

    assert response.status_code == 401
    assert "not 'refresh'" in problem_of(response)["detail"]


async def test_a_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    await register(client)
    refresh = (await sign_in(client)).json()["refresh_token"]

    response = await client.get("/v1/me/addresses", headers={"Authorization": f"Bearer {refresh}"})

    assert response.status_code == 401
    with pytest.raises(InvalidToken):
        await VERIFIER.verify(refresh)


async def test_a_refresh_token_of_an_account_that_is_gone_is_refused(
    client: httpx.AsyncClient, store: InMemoryAccountStore
) -> None:
    customer_id = await register(client)
    refresh = (await sign_in(client)).json()["refresh_token"]
    del store.accounts[customer_id]

    response = await trade(client, refresh)

    assert response.status_code == 401
    assert "no longer exists" in problem_of(response)["detail"]


async def test_the_refresh_grant_without_a_token_names_the_missing_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/token", data={"grant_type": "refresh_token"})

    assert response.status_code == 422
    assert [e["field"] for e in problem_of(response)["errors"]] == ["refresh_token"]


# --- me and the address book --------------------------------------------------------------------


async def test_me_is_the_signed_in_customers_account(client: httpx.AsyncClient) -> None:
    headers = await bearer_for(client)

    response = await client.get("/v1/me", headers=headers)

    assert response.status_code == 200
    assert (response.json()["login"], response.json()["login_kind"]) == ("13800138000", "phone")


async def test_an_address_is_saved_listed_read_and_deleted(client: httpx.AsyncClient) -> None:
    headers = await bearer_for(client)

    created = await client.post("/v1/me/addresses", json={**ADDRESS, "label": "家"}, headers=headers)

    assert created.status_code == 201
    saved = created.json()
    assert re.fullmatch(r"addr-[0-9a-f]{32}", saved["address_id"])
    assert (saved["phone"], saved["label"], saved["district"]) == ("13900139000", "家", "西湖区")
    assert created.headers["location"].endswith(f"/v1/me/addresses/{saved['address_id']}")
    assert (await client.get("/v1/me/addresses", headers=headers)).json() == {"items": [saved]}
    assert (await client.get(created.headers["location"], headers=headers)).json() == saved

    deleted = await client.delete(f"/v1/me/addresses/{saved['address_id']}", headers=headers)

    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get("/v1/me/addresses", headers=headers)).json() == {"items": []}
    assert (await client.get(created.headers["location"], headers=headers)).status_code == 404
    again = await client.delete(f"/v1/me/addresses/{saved['address_id']}", headers=headers)
    assert again.status_code == 404


async def test_the_order_service_reads_a_saved_address_through_the_address_book(
    client: httpx.AsyncClient, store: InMemoryAccountStore
) -> None:
    headers = await bearer_for(client)
    saved = (await client.post("/v1/me/addresses", json=ADDRESS, headers=headers)).json()
    customer_id = (await client.get("/v1/me", headers=headers)).json()["customer_id"]

    address = await store.address(customer_id, saved["address_id"])

    assert address is not None
    assert address.model_dump() == {**ADDRESS, "phone": "13900139000"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/me/addresses"), ("POST", "/v1/me/addresses"), ("DELETE", "/v1/me/addresses/addr-1")],
)
async def test_the_address_book_needs_a_token(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json=ADDRESS if method == "POST" else None)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_address_book_is_for_customers_only(client: httpx.AsyncClient) -> None:
    merchant = bearer(Principal("m-1", Role.MERCHANT, merchant_id="m-1"))

    response = await client.post("/v1/me/addresses", json=ADDRESS, headers=merchant)

    assert response.status_code == 403


async def test_another_customers_address_is_404_and_stays(client: httpx.AsyncClient) -> None:
    owner = await bearer_for(client)
    other = await bearer_for(client, "li.lei@example.com")
    saved = (await client.post("/v1/me/addresses", json=ADDRESS, headers=owner)).json()
    path = f"/v1/me/addresses/{saved['address_id']}"

    assert (await client.get(path, headers=other)).status_code == 404
    deleted = await client.delete(path, headers=other)
    assert deleted.status_code == 404
    assert problem_of(deleted)["type"].endswith("/address-not-found")
    assert (await client.get("/v1/me/addresses", headers=other)).json() == {"items": []}
    assert (await client.get(path, headers=owner)).status_code == 200


async def test_an_address_book_holds_twenty_addresses(client: httpx.AsyncClient) -> None:
    headers = await bearer_for(client)
    for number in range(MAX_ADDRESSES):
        labelled = {**ADDRESS, "label": f"#{number}"}
        response = await client.post("/v1/me/addresses", json=labelled, headers=headers)
        assert response.status_code == 201

    refused = await client.post("/v1/me/addresses", json=ADDRESS, headers=headers)

    assert refused.status_code == 409
    assert problem_of(refused)["type"].endswith("/address-book-full")
    assert "at most 20" in problem_of(refused)["detail"]
    assert len((await client.get("/v1/me/addresses", headers=headers)).json()["items"]) == MAX_ADDRESSES


async def test_an_incomplete_address_names_every_wrong_field_and_saves_nothing(
    client: httpx.AsyncClient,
) -> None:
    headers = await bearer_for(client)
    body = {**ADDRESS, "phone": "0571-8888888", "postal_code": "31000", "colour": "red"}
    del body["district"]

    response = await client.post("/v1/me/addresses", json=body, headers=headers)

    assert response.status_code == 422
    fields = {e["field"] for e in problem_of(response)["errors"]}
    assert fields == {"phone", "district", "postal_code", "colour"}
    assert (await client.get("/v1/me/addresses", headers=headers)).json() == {"items": []}


# --- the OpenAPI document -----------------------------------------------------------------------


async def test_every_account_route_documents_its_errors_and_examples(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        if path.startswith(("/v1/auth", "/v1/me"))
        for method, operation in item.items()
    }

    assert set(operations) == {
        ("post", "/v1/auth/register"),
        ("post", "/v1/auth/token"),
        ("get", "/v1/me"),
        ("get", "/v1/me/addresses"),
        ("post", "/v1/me/addresses"),
        ("get", "/v1/me/addresses/{address_id}"),
        ("delete", "/v1/me/addresses/{address_id}"),
    }
    for (method, path), operation in operations.items():
        errors = [status for status in operation["responses"] if status.startswith("4")]
        assert errors, f"{method} {path} documents no errors"
    token_body = operations[("post", "/v1/auth/token")]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in token_body
    schemas = document["components"]["schemas"]
    for name in ["RegisterIn", "AccountOut", "TokenOut", "AddressIn", "SavedAddressOut", "AddressList"]:
        assert schemas[name].get("examples"), f"{name} has no example"

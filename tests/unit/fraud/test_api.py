"""GET /v1/fraud/scores over the shared FastAPI app, the scores table a plain dict filled by the handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.fraud.api import build_router
from services.fraud.handlers import HANDLERS, FraudBatch
from services.fraud.main import FraudSettings, build_app, http_app, readiness
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.contracts import OrderPlaced, decode_data
from shared.http import create_app
from shared.kafka import Delivery, topic_for
from shared.settings import SharedSettings
from tests.unit.fraud.factories import RULES, envelope_of, placed

pytestmark = pytest.mark.unit

ADMIN = Principal("ops-1", Role.ADMIN)


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


def scored(scores: dict[str, Any], event: OrderPlaced) -> None:
    """Score `event` into `scores` as the scoring agent does."""
    envelope = envelope_of(event, correlation_id="corr-7")
    delivery = Delivery(envelope, decode_data(envelope), topic_for(envelope), 0, 0)
    HANDLERS.dispatch(FraudBatch(scores, {}, RULES), [delivery])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    scores: dict[str, Any] = {}
    scored(scores, placed("cust-blocked-demo", order_id="ord-blocked"))
    scored(scores, placed("cust-1", 3_000_000, order_id="ord-high"))
    app = create_app("fraud", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(scores))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_admin_reads_the_decision_stored_for_an_order(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/fraud/scores/ord-high", headers=bearer(ADMIN))

    assert response.status_code == 200
    body = response.json()
    assert (body["order_id"], body["decision"], body["score"], body["reasons"]) == (
        "ord-high",
        "review",
        50,
        ["AMOUNT_HIGH"],
    )
    assert body["correlation_id"] == "corr-7"
    assert body["event_id"] and body["scored_at"]


async def test_a_blocked_customers_order_shows_its_rejection(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/fraud/scores/ord-blocked", headers=bearer(ADMIN))).json()

    assert (body["decision"], body["reasons"]) == ("reject", ["BLOCKED_CUSTOMER"])


async def test_an_order_without_a_score_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/fraud/scores/ord-unknown", headers=bearer(ADMIN))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/score-not-found")


async def test_a_malformed_order_id_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/fraud/scores/bad id!", headers=bearer(ADMIN))

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["location"]) == ("order_id", "path")


async def test_without_a_token_a_score_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/fraud/scores/ord-high")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "caller",
    [
        Principal("cust-1", Role.CUSTOMER),
        Principal("merchant-user", Role.MERCHANT, merchant_id="m-1"),
        Principal("guest-1", Role.GUEST, order_id="ord-high"),
    ],
)
async def test_scores_are_for_admin_only(client: httpx.AsyncClient, caller: Principal) -> None:
    response = await client.get("/v1/fraud/scores/ord-high", headers=bearer(caller))

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "ord-high" not in response.json()["detail"]


async def test_the_openapi_document_lists_the_route_with_its_errors_and_examples(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/v1/fraud/scores/{order_id}"]["get"]
    assert {"200", "401", "403", "404", "422"} <= operation["responses"].keys()
    assert operation["security"] == [{"HTTPBearer": []}]
    assert document["components"]["schemas"]["FraudScoreOut"]["examples"]
    assert (await client.get("/docs")).status_code == 200


async def test_the_worker_serves_the_shared_app_and_is_not_ready_before_its_consumer_runs(
    tmp_path: Path,
) -> None:
    # The production wiring, never started: nothing here reaches a broker.
    settings = FraudSettings(fraud_data_dir=str(tmp_path))
    fraud = build_app(settings)
    app = http_app(fraud, settings)

    assert fraud.app.conf.web_enabled is False, "faust's own web server would take FRAUD_PORT"
    assert await readiness(fraud.app, settings)["consumer"]() is False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": "fraud"}
        assert (await client.get("/v1/fraud/scores/ord-1")).status_code == 401
        document = (await client.get("/openapi.json")).json()
    assert "/v1/fraud/scores/{order_id}" in document["paths"]
    assert document["info"]["description"]

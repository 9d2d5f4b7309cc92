"""The revenue API over the shared FastAPI app, answering from a RevenueView filled by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.analytics.api import build_router
from services.analytics.domain import WINDOW, RevenueView, Totals, snapshot
from services.analytics.main import AnalyticsSettings, build_app, follower, http_app, readiness
from shared.auth import Principal, Role, TokenIssuer, TokenVerifier
from shared.http import create_app
from shared.settings import SharedSettings
from tests.unit.samples import T0

pytestmark = pytest.mark.unit

# The API's clock: in the third minute after T0.
NOW = T0 + timedelta(minutes=2, seconds=10)
ANALYST = Principal("ana-1", Role.ANALYST)
ADMIN = Principal("ops-1", Role.ADMIN)
TEA = Principal("m-tea", Role.MERCHANT, merchant_id="m-tea")
CUPS = Principal("m-cups", Role.MERCHANT, merchant_id="m-cups")
CUSTOMER = Principal("cust-1", Role.CUSTOMER)


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer(SharedSettings()).access_token(principal)}"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    view = RevenueView(retention=timedelta(days=1))
    for merchant_id, minute, orders, revenue_fen in (
        ("m-tea", T0, 2, 3998),
        ("m-tea", T0 + WINDOW, 1, 7),
        ("m-cups", T0, 1, 500),
        ("m-tea", T0 - timedelta(hours=2), 1, 1),
    ):
        view.apply(snapshot(merchant_id, minute, Totals(orders=orders, revenue_fen=revenue_fen)), now=NOW)
    app = create_app("analytics", readiness={}, token_verifier=TokenVerifier(SharedSettings()))
    app.include_router(build_router(view, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def minutes(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(row["window_start"], row["orders"], row["revenue_fen"]) for row in body["minutes"]]


async def test_an_analyst_reads_a_merchants_minutes_in_a_range_with_their_totals(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/v1/analytics/merchants/m-tea/revenue",
        params={"from": "2026-11-25T12:00:00Z", "to": "2026-11-25T20:02:00+08:00"},
        headers=bearer(ANALYST),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert minutes(body) == [("2026-11-25T12:00:00Z", 2, 3998), ("2026-11-25T12:01:00Z", 1, 7)]
    assert body["minutes"][0]["window_end"] == "2026-11-25T12:01:00Z"
    assert body["minutes"][0]["net_fen"] == 3998
    assert body["totals"] == {"orders": 3, "revenue_fen": 4005, "refunded_fen": 0, "net_fen": 4005}
    assert (body["merchant_id"], body["currency"]) == ("m-tea", "CNY")
    assert (body["from"], body["to"]) == ("2026-11-25T12:00:00Z", "2026-11-25T12:02:00Z")


async def test_without_a_range_the_last_hour_up_to_the_current_minute_is_answered(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/analytics/merchants/m-tea/revenue", headers=bearer(ADMIN))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == ("2026-11-25T11:03:00Z", "2026-11-25T12:03:00Z")
    assert minutes(body) == [("2026-11-25T12:00:00Z", 2, 3998), ("2026-11-25T12:01:00Z", 1, 7)]


async def test_a_merchant_reads_its_own_revenue_but_not_another_merchants(client: httpx.AsyncClient) -> None:
    own = await client.get("/v1/analytics/merchants/m-cups/revenue", headers=bearer(CUPS))
    other = await client.get("/v1/analytics/merchants/m-tea/revenue", headers=bearer(CUPS))

    assert own.status_code == 200 and minutes(own.json()) == [("2026-11-25T12:00:00Z", 1, 500)]
    assert other.status_code == 403
    assert other.headers["content-type"] == "application/problem+json"


async def test_a_merchant_without_sales_in_the_range_has_no_minutes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/merchants/m-quiet/revenue", headers=bearer(ANALYST))

    assert response.status_code == 200
    assert response.json()["minutes"] == []
    assert response.json()["totals"]["orders"] == 0


@pytest.mark.parametrize(
    ("principal", "status"), [(None, 401), (CUSTOMER, 403), (TEA, 403), (ANALYST, 200), (ADMIN, 200)]
)
async def test_every_merchants_minute_is_for_analysts_and_admins(
    client: httpx.AsyncClient, principal: Principal | None, status: int
) -> None:
    response = await client.get(
        "/v1/analytics/revenue",
        params={"minute": "2026-11-25T12:00:42Z"},
        headers=bearer(principal) if principal else {},
    )

    assert response.status_code == status, response.text
    if status == 200:
        body = response.json()
        assert (body["window_start"], body["window_end"]) == ("2026-11-25T12:00:00Z", "2026-11-25T12:01:00Z")
        assert [(row["merchant_id"], row["revenue_fen"]) for row in body["merchants"]] == [
            ("m-cups", 500),
            ("m-tea", 3998),
        ]
        assert body["totals"] == {"orders": 3, "revenue_fen": 4498, "refunded_fen": 0, "net_fen": 4498}


async def test_a_customer_cannot_read_a_merchants_revenue(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/merchants/m-tea/revenue", headers=bearer(CUSTOMER))

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-25T12:00:00"}, "from"),
        ({"to": "2026-11-25T12:00:00"}, "to"),
        ({"from": "2026-11-25T12:05:00Z", "to": "2026-11-25T12:00:00Z"}, "from"),
        ({"from": "2026-11-25T12:00:00Z", "to": "2026-11-25T12:00:00Z"}, "from"),
        ({"from": "yesterday"}, "from"),
    ],
)
async def test_a_bad_range_is_a_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get(
        "/v1/analytics/merchants/m-tea/revenue", params=params, headers=bearer(ANALYST)
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [field]


@pytest.mark.parametrize("minute", ["2026-11-25T12:00:00", "noon", None])
async def test_a_minute_without_a_zone_or_none_at_all_is_a_422(
    client: httpx.AsyncClient, minute: str | None
) -> None:
    params = {"minute": minute} if minute else {}
    response = await client.get("/v1/analytics/revenue", params=params, headers=bearer(ANALYST))

    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == ["minute"]


async def test_a_merchant_id_that_is_no_id_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/merchants/m tea!/revenue", headers=bearer(ANALYST))

    assert response.status_code == 422


async def test_the_served_app_documents_every_route_with_its_errors(tmp_path: Path) -> None:
    settings = AnalyticsSettings(analytics_data_dir=str(tmp_path))
    analytics = build_app(settings)
    view = RevenueView(retention=settings.retention)
    app = http_app(view, readiness(analytics.app, follower(settings, view), settings), settings)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        document = (await client.get("/openapi.json")).json()
        ready = await client.get("/readyz")

    routes = {"/v1/analytics/merchants/{merchant_id}/revenue", "/v1/analytics/revenue"}
    assert routes <= set(document["paths"])
    for path in routes:
        responses = document["paths"][path]["get"]["responses"]
        assert {"401", "403", "422"} <= set(responses), path
    assert ready.status_code == 503, "not ready before the faust app and the view have started"

"""The HTTP layer every service shares: a busy service says so at once, as problem+json."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from shared.batching import Overloaded
from shared.http import PROBLEM_JSON, create_app

pytestmark = pytest.mark.unit


def test_an_overloaded_service_answers_503_with_retry_after() -> None:
    app = create_app("test", readiness={})
    router = APIRouter()

    @router.post("/work")
    async def work() -> None:
        raise Overloaded("256 requests are already in progress")

    app.include_router(router)
    response = TestClient(app).post("/work")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["title"] == "Busy" and "256 requests" in response.json()["detail"]

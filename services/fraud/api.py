"""Faust's web server: health, readiness, metrics and stored scores (shaped like shared/http.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.fraud.handlers import SERVICE, Table, public_view

PROBLEM_JSON = "application/problem+json"

ReadinessCheck = Callable[[], Awaitable[bool]]


def register_routes(app: faust.App, *, scores: Table, readiness: Mapping[str, ReadinessCheck]) -> None:
    @app.page("/healthz")
    async def healthz(self: View, _request: Request) -> Response:
        """Alive: the event loop answers."""
        return self.json({"status": "ok", "service": SERVICE})

    @app.page("/readyz")
    async def readyz(self: View, _request: Request) -> Response:
        """Ready: the consumer holds its partitions and the broker answers."""
        checks = {name: await check() for name, check in readiness.items()}
        ready = all(checks.values())
        return self.json(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    @app.page("/metrics")
    async def metrics(self: View, _request: Request) -> Response:
        """Prometheus exposition of this process's registry."""
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/v1/fraud/scores/{order_id}")
    async def get_score(self: View, request: Request, order_id: str) -> Response:
        """The decision fraud emitted for one order."""
        stored = scores.get(order_id)
        if stored is None:
            return _problem(
                self,
                request,
                404,
                "Not Found",
                f"no fraud score for order {order_id!r}",
                code="score-not-found",
            )
        return self.json(public_view(stored))


def _problem(view: View, request: Request, status: int, title: str, detail: str, *, code: str) -> Response:
    body: dict[str, Any] = {
        "type": f"https://errors.order-platform.example/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    return view.json(body, status=status, content_type=PROBLEM_JSON)

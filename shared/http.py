"""The FastAPI side every service shares: health, readiness, metrics and problem+json errors."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.batching import Overloaded
from shared.errors import is_transient
from shared.logging import correlation, get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
CORRELATION_HEADER = "X-Correlation-ID"

ReadinessCheck = Callable[[], Awaitable[bool]]


class Problem(Exception):
    """An error a client should see, rendered as RFC 9457 problem+json."""

    def __init__(
        self, status: int, title: str, detail: str, *, code: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code or title.lower().replace(" ", "-")
        self.extra = extra


def problem_response(
    status: int, title: str, detail: str, *, code: str, instance: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://errors.order-platform.example/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def create_app(service: str, *, readiness: Mapping[str, ReadinessCheck], version: str = "0.1.0") -> FastAPI:
    """An app with /healthz, /readyz and /metrics; the service adds its routers."""
    app = FastAPI(title=f"{service} service", version=version)

    @app.middleware("http")
    async def _correlate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Every log line of the request carries the caller's correlation id (or a fresh one),
        # and the caller gets it back to quote when asking about it.
        correlation_id = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
        with correlation(correlation_id):
            response = await call_next(request)
        response.headers[CORRELATION_HEADER] = correlation_id
        return response

    @app.exception_handler(Problem)
    async def _problem(request: Request, error: Problem) -> JSONResponse:
        return problem_response(
            error.status,
            error.title,
            error.detail,
            code=error.code,
            instance=request.url.path,
            **error.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return problem_response(
            422,
            "Invalid request",
            f"{where}: {first['msg']}" if where else str(first["msg"]),
            code="invalid-request",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        title = HTTPStatus(error.status_code).phrase
        return problem_response(
            error.status_code,
            title,
            str(error.detail),
            code=title.lower().replace(" ", "-"),
            instance=request.url.path,
        )

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, error: Overloaded) -> JSONResponse:
        response = problem_response(
            503,
            "Busy",
            f"too many requests are in progress ({error}); retry after the Retry-After seconds",
            code="busy",
            instance=request.url.path,
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        if is_transient(error):
            response = problem_response(
                503,
                "Temporarily unavailable",
                "the request met a concurrent change or a busy datastore; retry it",
                code="temporarily-unavailable",
                instance=request.url.path,
            )
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(
            500,
            "Internal error",
            "the request failed on our side; it has been logged",
            code="internal-error",
            instance=request.url.path,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = {name: await check() for name, check in readiness.items()}
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

"""The FastAPI side every service shares: health, readiness, metrics and problem+json errors."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        self,
        status: int,
        title: str,
        detail: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code or title.lower().replace(" ", "-")
        self.headers = dict(headers or {})
        self.extra = extra


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field in the request, e.g. `shipping_address.phone`.")
    message: str
    location: str = Field(default="body", description="body, query, path or header")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: every error a client gets from this platform has this shape."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = Field(
        default=None, description="Every invalid field at once (422 only)."
    )


class BodyTooLarge(Exception):
    """The request body is bigger than HTTP_MAX_BODY_BYTES."""


_PROBLEM_EXAMPLES: dict[int, tuple[str, str, str]] = {
    401: ("Unauthenticated", "unauthenticated", "this request needs an `Authorization: Bearer` token"),
    403: ("Forbidden", "forbidden", "this request needs the role admin"),
    404: ("Not found", "not-found", "no such resource, or not yours"),
    409: ("Conflict", "conflict", "the resource is not in a state that allows this"),
    413: ("Request too large", "request-too-large", "the request body is over 1048576 bytes"),
    422: ("Invalid request", "invalid-request", "shipping_address.phone: not a mainland China mobile number"),
    429: ("Too many requests", "too-many-requests", "rate limit exceeded; retry after Retry-After seconds"),
    503: ("Busy", "busy", "too many requests are in progress; retry after the Retry-After seconds"),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem+json errors a route may answer, with examples."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        title, code, detail = _PROBLEM_EXAMPLES[status]
        example: dict[str, Any] = {
            "type": f"https://errors.order-platform.example/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "/v1/...",
        }
        if status == 422:
            example["errors"] = [{"field": "shipping_address.phone", "message": detail, "location": "body"}]
        documented[status] = {
            "model": ProblemDetails,
            "description": title,
            "content": {PROBLEM_JSON: {"example": example}},
        }
    return documented


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


def field_errors(raw: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Pydantic's errors as the `errors` list of a 422: one `{field, message, location}` each."""
    found = []
    for error in raw:
        loc = [str(part) for part in error["loc"]]
        location = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        path = loc[1:] if loc and loc[0] == location else loc
        found.append({"field": ".".join(path), "message": str(error["msg"]), "location": location})
    return found


def create_app(
    service: str,
    *,
    readiness: Mapping[str, ReadinessCheck],
    token_verifier: object | None = None,
    max_body_bytes: int = 1024 * 1024,
    version: str = "0.1.0",
    description: str = "",
) -> FastAPI:
    """An app with /healthz, /readyz and /metrics; the service adds its routers.

    `token_verifier` (shared.auth.TokenVerifier) is what the routes' auth dependencies use."""
    app = FastAPI(
        title=f"{service} service",
        version=version,
        description=description,
        responses=problem_responses(413, 503),
    )
    app.state.token_verifier = token_verifier
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

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
        response = problem_response(
            error.status,
            error.title,
            error.detail,
            code=error.code,
            instance=request.url.path,
            **error.extra,
        )
        response.headers.update(error.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = field_errors(error.errors())
        if len(errors) == 1 and errors[0]["field"] == "" and errors[0]["location"] == "body":
            detail = errors[0]["message"]
        else:
            detail = "; ".join(f"{e['field'] or e['location']}: {e['message']}" for e in errors)
        return problem_response(
            422,
            "Invalid request",
            detail or "invalid request",
            code="invalid-request",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, _error: BodyTooLarge) -> JSONResponse:
        return _body_too_large(request.url.path, max_body_bytes)

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


def _body_too_large(instance: str, max_bytes: int) -> JSONResponse:
    return problem_response(
        413,
        "Request too large",
        f"the request body is over {max_bytes} bytes",
        code="request-too-large",
        instance=instance,
    )


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413: at once by Content-Length, and while reading
    otherwise (a chunked upload), before the body is held in memory whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _body_too_large(scope["path"], self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)

"""Analytics' HTTP API: revenue and order counts per merchant per minute, as published on
analytics.merchant-revenue, for analysts, admins and each merchant (its own figures only).

The app around it is shared.http's (health, readiness, metrics, problem+json, bearer auth), served by
uvicorn in the worker process (main.py); faust's own web server is off.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from services.analytics.domain import WINDOW, RevenueView, minute_of, summed
from shared.auth import Caller, Principal, Role, require_role
from shared.clock import Clock, utc_now
from shared.contracts import CURRENCY, MerchantRevenue
from shared.http import Problem, problem_responses

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
MerchantId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
AnalystCaller = Annotated[Principal, Depends(require_role(Role.ANALYST, Role.ADMIN))]
# Without `from`, a merchant's figures start this long before `to`.
DEFAULT_SPAN = timedelta(hours=1)

_ROW_EXAMPLE: JsonDict = {
    "merchant_id": "m-teahouse",
    "window_start": "2026-11-25T12:00:00Z",
    "window_end": "2026-11-25T12:01:00Z",
    "orders": 3,
    "revenue_fen": 5997,
    "refunded_fen": 0,
    "net_fen": 5997,
}
_TOTALS_EXAMPLE: JsonDict = {"orders": 3, "revenue_fen": 5997, "refunded_fen": 0, "net_fen": 5997}


class TotalsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_TOTALS_EXAMPLE]})

    orders: int = Field(description="Confirmed orders holding at least one of the merchant's lines.")
    revenue_fen: int = Field(description="The merchant's line totals over those orders, in fen.")
    refunded_fen: int = Field(description="Refunded in the minute (refund events are not emitted yet).")
    net_fen: int = Field(description="revenue_fen - refunded_fen")


class MinuteOut(TotalsOut):
    model_config = ConfigDict(json_schema_extra={"examples": [_ROW_EXAMPLE]})

    merchant_id: str
    window_start: datetime = Field(description="The minute's first instant (inclusive), UTC.")
    window_end: datetime = Field(description="The next minute's first instant (exclusive), UTC.")

    @classmethod
    def of(cls, row: MerchantRevenue) -> MinuteOut:
        return cls(
            merchant_id=row.merchant_id,
            window_start=row.window_start,
            window_end=row.window_end,
            orders=row.orders,
            revenue_fen=row.revenue_fen,
            refunded_fen=row.refunded_fen,
            net_fen=row.revenue_fen - row.refunded_fen,
        )


class MerchantRevenueOut(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "m-teahouse",
                    "from": "2026-11-25T11:01:00Z",
                    "to": "2026-11-25T12:01:00Z",
                    "currency": "CNY",
                    "minutes": [_ROW_EXAMPLE],
                    "totals": _TOTALS_EXAMPLE,
                }
            ]
        },
    )

    merchant_id: str
    start: datetime = Field(alias="from", description="The first minute asked for (inclusive).")
    end: datetime = Field(alias="to", description="The end of the range (exclusive).")
    currency: str = CURRENCY
    minutes: list[MinuteOut] = Field(
        description="The minutes with at least one counted fact, oldest first; quiet minutes are left out."
    )
    totals: TotalsOut = Field(description="The sum over `minutes`.")


class MinuteRevenueOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "window_start": "2026-11-25T12:00:00Z",
                    "window_end": "2026-11-25T12:01:00Z",
                    "currency": "CNY",
                    "merchants": [_ROW_EXAMPLE],
                    "totals": _TOTALS_EXAMPLE,
                }
            ]
        }
    )

    window_start: datetime
    window_end: datetime
    currency: str = CURRENCY
    merchants: list[MinuteOut] = Field(description="Every merchant with a counted fact in the minute.")
    totals: TotalsOut = Field(description="The sum over `merchants`.")


def totals_out(rows: Iterable[MerchantRevenue]) -> TotalsOut:
    totals = summed(rows)
    return TotalsOut(
        orders=totals.orders,
        revenue_fen=totals.revenue_fen,
        refunded_fen=totals.refunded_fen,
        net_fen=totals.net_fen,
    )


def may_read(principal: Principal, merchant_id: str) -> bool:
    """Analysts and admins read every merchant's figures; a merchant reads its own."""
    return principal.role in (Role.ANALYST, Role.ADMIN) or (
        principal.role is Role.MERCHANT and principal.merchant_id == merchant_id
    )


def aware(name: str, value: datetime) -> datetime:
    """`value` in UTC; a 422 naming the query parameter when it has no time zone."""
    if value.tzinfo is None:
        raise Problem(
            422,
            "Invalid request",
            f"{name}: give a time zone, e.g. 2026-11-26T00:00:00+08:00",
            errors=[{"field": name, "message": "give a time zone", "location": "query"}],
        )
    return value.astimezone(UTC)


def build_router(view: RevenueView, clock: Clock = utc_now) -> APIRouter:
    """The routes over `view`: the latest published totals per merchant and minute."""
    router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

    @router.get(
        "/merchants/{merchant_id}/revenue",
        response_model=MerchantRevenueOut,
        responses=problem_responses(401, 403, 422),
    )
    async def merchant_revenue(
        merchant_id: MerchantId,
        principal: Caller,
        start: Annotated[
            datetime | None,
            Query(
                alias="from",
                description="Minutes starting at or after this (ISO 8601, with a zone); default `to` - 1 h.",
            ),
        ] = None,
        end: Annotated[
            datetime | None,
            Query(alias="to", description="End, exclusive (ISO 8601 with a zone); default the next minute."),
        ] = None,
    ) -> MerchantRevenueOut:
        """One merchant's orders and revenue per minute, oldest first. Analysts, admins, the merchant."""
        if not may_read(principal, merchant_id):
            raise Problem(
                403,
                "Forbidden",
                "merchants read their own revenue; analysts and admins any",
                code="forbidden",
            )
        until = aware("to", end) if end is not None else minute_of(clock()) + WINDOW
        since = aware("from", start) if start is not None else until - DEFAULT_SPAN
        if since >= until:
            raise Problem(
                422,
                "Invalid request",
                "from: must be before `to`",
                errors=[{"field": "from", "message": "must be before `to`", "location": "query"}],
            )
        rows = view.merchant(merchant_id, since, until)
        return MerchantRevenueOut(
            merchant_id=merchant_id,
            start=since,
            end=until,
            minutes=[MinuteOut.of(row) for row in rows],
            totals=totals_out(rows),
        )

    @router.get(
        "/revenue",
        response_model=MinuteRevenueOut,
        responses=problem_responses(401, 403, 422),
    )
    async def minute_revenue(
        _: AnalystCaller,
        minute: Annotated[
            datetime,
            Query(description="Any instant of the minute (ISO 8601 with a zone), e.g. 2026-11-25T12:00:00Z."),
        ],
    ) -> MinuteRevenueOut:
        """Every merchant's orders and revenue in one minute. Analysts and admins."""
        start = minute_of(aware("minute", minute))
        rows = view.minute(start)
        return MinuteRevenueOut(
            window_start=start,
            window_end=start + WINDOW,
            merchants=[MinuteOut.of(row) for row in rows],
            totals=totals_out(rows),
        )

    return router

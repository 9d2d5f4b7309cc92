"""Events the analytics service owns (topic `analytics.merchant-revenue`, key = merchant id)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from shared.contracts.base import Event, register
from shared.contracts.common import CURRENCY, Fen
from shared.contracts.topics import ANALYTICS_MERCHANT_REVENUE


@register
class MerchantRevenue(Event):
    """One merchant's totals so far for one minute of business time (the envelope `time` of the facts
    counted, not when analytics read them).

    Published again on every change to the minute, so the latest record per (merchant_id,
    window_start) is the minute's total; a reader keeps that one and may drop the rest. Refunds will
    count in `refunded_fen`, in the minute they happened, once the platform emits refund events."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "merchant_id": "m-teahouse",
                    "window_start": "2026-11-25T12:00:00Z",
                    "window_end": "2026-11-25T12:01:00Z",
                    "orders": 3,
                    "revenue_fen": 5997,
                    "refunded_fen": 0,
                    "currency": "CNY",
                }
            ]
        }
    )

    TOPIC = ANALYTICS_MERCHANT_REVENUE
    TYPE = "analytics.merchant_revenue"
    merchant_id: str
    window_start: datetime = Field(description="The minute's first instant (inclusive), UTC.")
    window_end: datetime = Field(description="The next minute's first instant (exclusive), UTC.")
    orders: int = Field(ge=0, description="Confirmed orders holding at least one of the merchant's lines.")
    revenue_fen: Fen = Field(description="The merchant's line totals over those orders.")
    refunded_fen: Fen = Field(default=0, description="Refunded to the merchant's customers in the minute.")
    currency: str = CURRENCY

    def subject(self) -> str:
        return self.merchant_id

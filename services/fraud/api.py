"""Fraud's HTTP API (admin only): the decision fraud emitted for an order, read from the scores table.

The app around it is shared.http's (health, readiness, metrics, problem+json, bearer auth), served by
uvicorn in the worker process (main.py); faust's own web server is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from services.fraud.handlers import public_view
from shared.auth import Role, require_role
from shared.contracts import FraudDecision, FraudReason
from shared.http import Problem, problem_responses

ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


class FraudScoreOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "ord_7d2f4b1c",
                    "decision": "review",
                    "score": 50,
                    "reasons": ["AMOUNT_HIGH"],
                    "event_id": "5b0e8f3a-9c1d-4e2f-8a7b-6c5d4e3f2a1b",
                    "scored_at": "2026-11-25T12:00:01Z",
                    "correlation_id": "3f2e1d0c-b9a8-4765-8432-10fedcba9876",
                }
            ]
        }
    )

    order_id: str
    decision: FraudDecision
    score: int = Field(ge=0, le=100, description="0 = no risk seen, 100 = certain fraud.")
    reasons: list[FraudReason] = Field(description="The rules the order tripped, if any.")
    event_id: str = Field(description="The id of the FraudScored event that carried this decision.")
    scored_at: datetime
    correlation_id: str = Field(description="The correlation id of the order's saga, to find its logs.")


def build_router(scores: Mapping[str, Any]) -> APIRouter:
    """The routes over `scores` (order id -> the stored FraudScored envelope), all for admin only."""
    router = APIRouter(prefix="/v1/fraud", tags=["fraud"], dependencies=[Depends(require_role(Role.ADMIN))])

    @router.get(
        "/scores/{order_id}", response_model=FraudScoreOut, responses=problem_responses(401, 403, 404, 422)
    )
    async def get_score(order_id: OrderId) -> FraudScoreOut:
        """The decision fraud emitted for one order: approve, review or reject, with its score and reasons."""
        stored = scores.get(order_id)
        if stored is None:
            raise Problem(
                404, "Score not found", f"no fraud score for order {order_id}", code="score-not-found"
            )
        return FraudScoreOut.model_validate(public_view(stored))

    return router

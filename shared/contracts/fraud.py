"""Events the fraud service owns (topic `fraud.events`, key = order id)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from shared.contracts.base import Event, register
from shared.contracts.topics import FRAUD_EVENTS


class FraudDecision(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    REJECT = "reject"


@register
class FraudScored(Event):
    TOPIC = FRAUD_EVENTS
    TYPE = "fraud.scored"
    order_id: str
    decision: FraudDecision
    score: int = Field(ge=0, le=100, description="0 = no risk seen, 100 = certain fraud.")
    reasons: list[str] = []

"""Events the fraud service owns (topic `fraud.events`, key = order id)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from shared.contracts.base import OrderEvent, register
from shared.contracts.topics import FRAUD_EVENTS


class FraudDecision(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    REJECT = "reject"


class FraudReason(StrEnum):
    """Why an order scored as it did: stable codes that clients and analysts match on."""

    BLOCKED_CUSTOMER = "BLOCKED_CUSTOMER"
    AMOUNT_OVER_LIMIT = "AMOUNT_OVER_LIMIT"
    AMOUNT_HIGH = "AMOUNT_HIGH"
    VELOCITY = "VELOCITY"


@register
class FraudScored(OrderEvent):
    TOPIC = FRAUD_EVENTS
    TYPE = "fraud.scored"
    decision: FraudDecision
    score: int = Field(ge=0, le=100, description="0 = no risk seen, 100 = certain fraud.")
    reasons: list[FraudReason] = []

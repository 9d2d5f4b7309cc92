"""Wires the fraud worker: settings, the faust app with its tables and agents, and the HTTP app.

One process, one event loop (shared.faust_app.run_faust_service): uvicorn serves the shared FastAPI
app on FRAUD_PORT, with the faust app beside it (faust's own web server off). SIGTERM stops the HTTP
server and the faust app, which commits and leaves its consumer group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import faust
from fastapi import FastAPI
from faust.types import AgentT, TableT
from pydantic import Field

from services.fraud.agents import BY_CUSTOMER_TOPIC, ROUTE, score
from services.fraud.api import build_router
from services.fraud.domain import Rules
from services.fraud.handlers import SERVICE, FraudBatch
from shared import faust_app
from shared.contracts import topics
from shared.faust_app import FaustWiring, Outputs, rekeying_app, run_faust_service
from shared.http import ReadinessCheck
from shared.settings import SharedSettings, load_settings

DESCRIPTION = (
    "Fraud scoring: every placed order is scored once against its customer's recent orders and the "
    "block list, and the decision (approve, review or reject, with a score and reasons) is published as "
    "FraudScored. Over HTTP, admin reads the decision stored for an order. Errors are RFC 9457 "
    "problem+json."
)


class FraudSettings(SharedSettings):
    fraud_port: int = 8003
    fraud_data_dir: str = ".run/fraud"
    fraud_review_above_fen: int = Field(default=2_000_000, ge=0)
    fraud_reject_above_fen: int = Field(default=5_000_000, ge=0)
    fraud_velocity_max_orders: int = Field(default=5, ge=1)
    fraud_velocity_window_s: float = Field(default=600.0, gt=0)
    fraud_blocked_customers: str = "cust-blocked-demo"

    def rules(self) -> Rules:
        return Rules(
            review_above_fen=self.fraud_review_above_fen,
            reject_above_fen=self.fraud_reject_above_fen,
            velocity_max_orders=self.fraud_velocity_max_orders,
            velocity_window_s=self.fraud_velocity_window_s,
            blocked_customers=frozenset(
                name.strip() for name in self.fraud_blocked_customers.split(",") if name.strip()
            ),
        )


@dataclass(frozen=True)
class FraudApp:
    """The faust app with the agents and tables that tests and the HTTP routes reach into."""

    app: faust.App
    route: AgentT[bytes]
    score: AgentT[bytes]
    scores: TableT[str, Any]
    history: TableT[str, Any]


def build_app(settings: FraudSettings, outputs: Outputs | None = None) -> FraudApp:
    """The app, its topics, tables and agents; `outputs` defaults to sending to the topics."""
    rekeying = rekeying_app(
        SERVICE,
        settings,
        ROUTE,
        data_dir=settings.fraud_data_dir,
        publish=topics.FRAUD_EVENTS,
        outputs=outputs,
    )
    scores = rekeying.app.Table("scores", partitions=settings.topic_partitions)
    history = rekeying.app.Table("velocity", partitions=settings.topic_partitions)
    new_batch = partial(FraudBatch, scores, history, settings.rules())
    return FraudApp(
        app=rekeying.app,
        route=rekeying.route,
        score=rekeying.agent("score", score, new_batch=new_batch),
        scores=scores,
        history=history,
    )


def readiness(app: faust.App, settings: FraudSettings) -> dict[str, ReadinessCheck]:
    """Ready: the app runs, holds partitions of its scoring topic with tables recovered, and the
    broker answers."""
    return faust_app.readiness(app, settings, holding=BY_CUSTOMER_TOPIC)


def http_app(fraud: FraudApp, settings: FraudSettings) -> FastAPI:
    """The shared FastAPI app (health, readiness, metrics, problem+json, auth) with fraud's routes."""
    return faust_app.http_app(
        SERVICE,
        settings,
        readiness=readiness(fraud.app, settings),
        routers=[build_router(fraud.scores)],
        description=DESCRIPTION,
    )


def wire(settings: FraudSettings) -> FaustWiring:
    """What the process runs: the faust app and the HTTP app over its scores table."""
    fraud = build_app(settings)
    return FaustWiring(app=fraud.app, http=http_app(fraud, settings))


async def main() -> None:
    settings = load_settings(FraudSettings)
    await run_faust_service(
        service=SERVICE, settings=settings, port=settings.fraud_port, wire=partial(wire, settings)
    )

"""Wires the analytics worker: settings, the faust app with its windowed tables and agents, the view
of the published totals that the API answers from, and the HTTP app.

One process, one event loop: shared.runtime.serve runs uvicorn (the shared FastAPI app) and, as its
workers, the faust app (faust's documented `faust_app_running`, with faust's own web server off) and
the follower that reads analytics.merchant-revenue back into the API's view. SIGTERM stops the HTTP
server, the follower and the faust app, which commits and leaves its consumer group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import faust
from fastapi import FastAPI
from faust.types import AgentT, TableT
from faust.windows import TumblingWindow
from pydantic import Field

from services.analytics.agents import BY_MERCHANT_TOPIC, ROUTE, tally
from services.analytics.api import build_router
from services.analytics.domain import WINDOW, RevenueView
from services.analytics.handlers import SERVICE, Tally
from services.analytics.view import Follower
from shared import faust_app
from shared.clock import Clock, utc_now
from shared.contracts import topics
from shared.faust_app import FaustWiring, Outputs, rekeying_app, run_faust_service
from shared.http import ReadinessCheck
from shared.kafka import make_plain_consumer
from shared.settings import DAY_S, SharedSettings, load_settings

DESCRIPTION = (
    "Analytics, an example a data team can copy: revenue and order counts per merchant per minute of "
    "business time, counted by faust-streaming agents in tumbling-window tables from the confirmed orders "
    "on order.events and published on every change to analytics.merchant-revenue (key: merchant id; the "
    "latest record per merchant and minute is the minute's total). Refunds will count once the platform "
    "emits refund events. Over HTTP, analysts and admins read any merchant's minutes and a merchant its "
    "own. Errors are RFC 9457 problem+json."
)

# The API's view may lag the published topic by this much (see follower()).
VIEW_FETCH_MAX_WAIT_MS = 250


class AnalyticsSettings(SharedSettings):
    analytics_port: int = 8005
    analytics_data_dir: str = ".run/analytics"
    # How long a minute is kept: in the tables (a fact older than this is no longer counted) and in
    # the API's view. Older minutes stay on analytics.merchant-revenue for as long as it keeps them.
    analytics_retention_s: float = Field(default=DAY_S, ge=600)

    @property
    def retention(self) -> timedelta:
        return timedelta(seconds=self.analytics_retention_s)


@dataclass(frozen=True)
class AnalyticsApp:
    """The faust app with the agents and tables that tests reach into."""

    app: faust.App
    route: AgentT[bytes]
    tally: AgentT[bytes]
    # Tables of one-minute windows, addressed by (key, the window's range): see handlers.Tally.
    window: TumblingWindow
    totals: TableT[Any, Any]
    counted: TableT[Any, Any]


def build_app(
    settings: AnalyticsSettings, outputs: Outputs | None = None, clock: Clock = utc_now
) -> AnalyticsApp:
    """The app, its topics, tables and agents; `outputs` defaults to sending to the topics."""
    rekeying = rekeying_app(
        SERVICE,
        settings,
        ROUTE,
        data_dir=settings.analytics_data_dir,
        publish=topics.ANALYTICS_MERCHANT_REVENUE,
        outputs=outputs,
    )
    app = rekeying.app
    # Windows are minutes of the envelope's time, which neither relative_to_stream (the Kafka
    # timestamp) nor relative_to_field (a faust.Record field; records here are raw CloudEvents) reads:
    # the tally addresses each window by the range this TumblingWindow gives for the envelope's time.
    # Windows expire (and their changelog entries are deleted) `retention` after they end.
    window = TumblingWindow(WINDOW.total_seconds(), expires=settings.retention)
    totals = app.Table("revenue", partitions=settings.topic_partitions).using_window(window)
    counted = app.Table("counted", partitions=settings.topic_partitions).using_window(window)

    def new_tally(merchant_id: str) -> Tally:
        return Tally(
            merchant_id=merchant_id,
            totals=totals.table,
            counted=counted.table,
            window_of=window.current,
            retention=settings.retention,
            now=clock(),
        )

    return AnalyticsApp(
        app=app,
        route=rekeying.route,
        tally=rekeying.agent("tally", tally, new_tally=new_tally),
        window=window,
        totals=totals.table,
        counted=counted.table,
    )


def readiness(app: faust.App, follower: Follower, settings: AnalyticsSettings) -> dict[str, ReadinessCheck]:
    """Ready: the app holds partitions of its counting topic with tables recovered, the API's view has
    read the published totals that were there at start, and the broker answers."""

    async def view_caught_up() -> bool:
        return follower.caught_up.is_set()

    return {**faust_app.readiness(app, settings, holding=BY_MERCHANT_TOPIC), "view": view_caught_up}


def http_app(view: RevenueView, checks: dict[str, ReadinessCheck], settings: AnalyticsSettings) -> FastAPI:
    """The shared FastAPI app (health, readiness, metrics, problem+json, auth) with analytics' routes."""
    return faust_app.http_app(
        SERVICE, settings, readiness=checks, routers=[build_router(view)], description=DESCRIPTION
    )


def follower(settings: AnalyticsSettings, view: RevenueView) -> Follower:
    """Reads every partition of analytics.merchant-revenue, with no group, into `view`."""
    consumer = make_plain_consumer(
        settings,
        f"{SERVICE}-view",
        # The follower seeks to the beginning itself; "latest" is aiokafka's default, kept as it was.
        auto_offset_reset="latest",
        # The API may lag the topic by this much; an idle follower then asks the broker 4 times a
        # second rather than 20 (KAFKA_FETCH_MAX_WAIT_MS is short for the saga's hops, not for this).
        fetch_max_wait_ms=max(settings.kafka_fetch_max_wait_ms, VIEW_FETCH_MAX_WAIT_MS),
    )
    return Follower(
        consumer,
        topics.ANALYTICS_MERCHANT_REVENUE,
        view,
        poll_timeout_ms=settings.consumer_poll_timeout_ms,
        max_records=settings.consumer_max_records,
    )


def wire(settings: AnalyticsSettings) -> FaustWiring:
    analytics = build_app(settings)
    view = RevenueView(retention=settings.retention)
    reader = follower(settings, view)
    checks = readiness(analytics.app, reader, settings)
    return FaustWiring(app=analytics.app, http=http_app(view, checks, settings), workers=[reader.run])


async def main() -> None:
    settings = load_settings(AnalyticsSettings)
    await run_faust_service(
        service=SERVICE, settings=settings, port=settings.analytics_port, wire=partial(wire, settings)
    )

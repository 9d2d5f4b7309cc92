"""The broker alone: one producer, one consumer with the services' settings, one topic."""

from __future__ import annotations

import uuid

from bench.ceilings.probe import create_topics, delete_topics, measure_path
from bench.plan import Plan
from bench.results import MessagingCeiling
from shared.kafka import make_producer
from shared.settings import SharedSettings


async def measure_broker(settings: SharedSettings, plan: Plan) -> MessagingCeiling:
    topic = f"bench-broker-{uuid.uuid4().hex[:8]}"
    await create_topics(settings, [topic])
    producer = make_producer(settings, client_id="bench-broker")
    await producer.start()
    try:
        return await measure_path(
            path="broker produce→consume",
            settings=settings,
            producer=producer,
            entry=topic,
            exit_topic=topic,
            plan=plan,
        )
    finally:
        await producer.stop()
        await delete_topics(settings, [topic])

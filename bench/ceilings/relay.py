"""A relay chain of trivial consume→produce hops, each its own process (`bench.hop`)."""

from __future__ import annotations

import sys
import uuid

from bench.ceilings.probe import create_topics, delete_topics, measure_path
from bench.plan import Plan
from bench.results import MessagingCeiling
from devstack.processes import LocalStack
from devstack.stack import ProcessSpec
from shared.kafka import make_producer
from shared.settings import SharedSettings

HOPS = 5


def hop_specs(topics: list[str], bootstrap: str, env: dict[str, str]) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=f"hop-{index + 1}",
            argv=[
                sys.executable,
                "-m",
                "bench.hop",
                "--source",
                source,
                "--sink",
                sink,
                "--bootstrap",
                bootstrap,
            ],
            env=env,
        )
        for index, (source, sink) in enumerate(zip(topics, topics[1:], strict=False))
    ]


async def measure_relay(
    settings: SharedSettings, plan: Plan, helpers: LocalStack, env: dict[str, str]
) -> MessagingCeiling:
    """The chain's msgs/s and end-to-end latency; its hop processes run in `helpers` while measured."""
    run = uuid.uuid4().hex[:8]
    topics = [f"bench-relay-{run}-{index}" for index in range(HOPS + 1)]
    await create_topics(settings, topics)
    specs = hop_specs(topics, settings.kafka_bootstrap_servers, env)
    producer = make_producer(settings, client_id="bench-relay")
    try:
        for spec in specs:
            helpers.start(spec)
        await producer.start()
        return await measure_path(
            path=f"relay chain of {HOPS} hops",
            settings=settings,
            producer=producer,
            entry=topics[0],
            exit_topic=topics[-1],
            plan=plan,
        )
    except AssertionError as error:
        tails = "\n".join(f"--- {spec.name}\n{helpers.log_tail(spec.name, lines=10)}" for spec in specs)
        raise AssertionError(f"{error}\nlast lines of the hops' logs:\n{tails}") from None
    finally:
        await producer.stop()
        helpers.stop_together([spec.name for spec in specs if spec.name in helpers.running])
        await delete_topics(settings, topics)

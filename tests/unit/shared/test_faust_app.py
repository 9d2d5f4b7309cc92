"""The faust plumbing the stream-processing services share."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import TopicT

from shared.faust_app import OutboundRecord, bind, broker_reachable, broker_urls, new_app, topic_sender
from shared.settings import SharedSettings

pytestmark = pytest.mark.unit


@dataclass
class UnackedTopic:
    """A topic whose send is taken at once and acknowledged only when the test says so."""

    ack: asyncio.Future[None]
    sent: list[dict[str, Any]] = field(default_factory=list)
    taken: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, **record: Any) -> asyncio.Future[None]:
        self.sent.append(record)
        self.taken.set()
        return self.ack


async def test_a_send_to_a_topic_returns_only_once_the_broker_has_acked() -> None:
    topic = UnackedTopic(asyncio.get_running_loop().create_future())
    record = OutboundRecord(b"k", b"v", [("empty", None)])

    sending = asyncio.ensure_future(topic_sender(cast(TopicT, topic))(record))
    await asyncio.wait_for(topic.taken.wait(), 5)
    assert not sending.done(), "the agent would move on before the broker has the record"
    topic.ack.set_result(None)
    await asyncio.wait_for(sending, 5)

    assert topic.sent == [{"key": b"k", "value": b"v", "headers": [("empty", None)]}]


async def test_the_faust_consumer_waits_no_longer_than_the_services_fetch_wait(tmp_path: Path) -> None:
    app = new_app("test-faust-app", SharedSettings(kafka_fetch_max_wait_ms=7), data_dir=str(tmp_path))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
    try:
        assert consumer._fetch_max_wait_ms == 7
    finally:
        await consumer.stop()


def test_the_app_keeps_tables_in_memory_with_faust_web_off(tmp_path: Path) -> None:
    app = new_app("test-faust-app", SharedSettings(topic_partitions=5), data_dir=str(tmp_path))

    assert app.conf.store.scheme == "memory"
    assert app.conf.web_enabled is False
    assert app.conf.topic_partitions == 5


def test_each_bootstrap_server_becomes_a_broker_url() -> None:
    settings = SharedSettings(kafka_bootstrap_servers="h1:9092, h2:9093,,")

    assert broker_urls(settings) == ["kafka://h1:9092", "kafka://h2:9093"]


async def test_a_bound_agent_keeps_its_name_and_gets_its_dependencies() -> None:
    async def score(stream: list[int], outputs: list[int]) -> None:
        """Scores."""
        outputs.extend(stream)

    outputs: list[int] = []
    bound = bind(score, outputs=outputs)
    await bound([1, 2])

    assert (bound.__name__, bound.__doc__, outputs) == ("score", "Scores.", [1, 2])


async def test_the_broker_is_reachable_when_any_bootstrap_server_accepts_a_connection() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    try:
        assert await broker_reachable(f"127.0.0.1:{closed_port},127.0.0.1:{port}")
        assert not await broker_reachable(f"127.0.0.1:{closed_port}")
        assert not await broker_reachable("no-port-here")
    finally:
        server.close()
        await server.wait_closed()

"""The agents of a re-keying faust service (shared.faust_app.rekeying_app) under faust's test_context.

A test builds the service's production app (its build_app) with in-memory tables and a Recorder's
outputs; nothing starts its consumer or producer, and the `no_network` fixture (tests/unit/conftest.py)
fails any test that tries to open a connection. The recorded outputs never suspend, so `put()`
returns once the agent has handled the record (faust's wait covers the value being taken off the
stream; the rest of the agent's loop runs before it next yields control).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from faust.types import AgentT
from prometheus_client import REGISTRY

from shared.faust_app import OutboundRecord, Outputs, Send
from shared.kafka import Headers


def recording(into: list[OutboundRecord]) -> Send:
    async def send(record: OutboundRecord) -> None:
        into.append(record)

    return send


@dataclass
class Recorder:
    """What the agents send, by where it goes."""

    forwarded: list[OutboundRecord] = field(default_factory=list)
    published: list[OutboundRecord] = field(default_factory=list)
    dead_letters: list[OutboundRecord] = field(default_factory=list)

    def outputs(self) -> Outputs:
        return Outputs(
            forward=recording(self.forwarded),
            publish=recording(self.published),
            dead_letter=recording(self.dead_letters),
        )


@dataclass
class Agents:
    """The route agent and the stateful agent it forwards to, each in its test context."""

    route: Any
    stateful: Any
    recorder: Recorder

    async def source(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Put a record on the source topic and let what it is re-keyed into reach the stateful agent."""
        before = len(self.recorder.forwarded)
        await self.route.put(value, key=key, headers=headers)
        for record in self.recorder.forwarded[before:]:
            await self.stateful.put(record.value, key=record.key, headers=record.headers)


@asynccontextmanager
async def under_test(
    route: AgentT[bytes], stateful: AgentT[bytes], recorder: Recorder
) -> AsyncIterator[Agents]:
    async with route.test_context() as routing, stateful.test_context() as applying:
        yield Agents(routing, applying, recorder)


def counted(service: str, name: str, event_type: str) -> float:
    """The value of the counter `name` for `service` and `event_type`."""
    return REGISTRY.get_sample_value(name, {"service": service, "type": event_type}) or 0.0

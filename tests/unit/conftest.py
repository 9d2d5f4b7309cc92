"""Fixtures the unit tests of more than one service use."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.faust_agents import Recorder


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if anything in it tried to open a connection."""
    attempts: list[Any] = []

    def refuse(_sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"unit tests do not connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    assert attempts == [], "the test tried to reach a server"


@pytest.fixture
def recorder() -> Recorder:
    """Outputs for a faust service's agents that record what they send (tests.unit.faust_agents)."""
    return Recorder()

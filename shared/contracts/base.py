"""The event envelope and the registry that maps a wire type name to its typed model."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]


class Event(BaseModel):
    """Base of every event payload: a stable wire name, an integer version, the owning topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]
    # Upcasters keyed by the version they upgrade *from*: {1: upcast_v1_v2}.
    UPCASTERS: ClassVar[dict[int, Upcaster]] = {}

    def subject(self) -> str:
        """The Kafka key: the order id for order-scoped events."""
        return str(self.order_id)  # type: ignore[attr-defined]


class Envelope(BaseModel):
    """The JSON document on the wire, shaped after CloudEvents 1.0 (structured mode)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    version: int
    source: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    correlation_id: str
    causation_id: str | None = None
    data: JsonDict


E = TypeVar("E", bound=type[Event])

REGISTRY: dict[str, type[Event]] = {}


def register(cls: E) -> E:
    """Class decorator: makes an event type decodable by its wire name."""
    if cls.TYPE in REGISTRY and REGISTRY[cls.TYPE] is not cls:
        raise ValueError(f"event type {cls.TYPE!r} registered twice")
    REGISTRY[cls.TYPE] = cls
    return cls


class UnknownEventType(ValueError):
    """An envelope whose type no contract describes."""


def decode_data(envelope: Envelope) -> Event:
    """The typed event inside an envelope, upcast to the current version."""
    cls = REGISTRY.get(envelope.type)
    if cls is None:
        raise UnknownEventType(f"unknown event type {envelope.type!r}")
    if envelope.version > cls.VERSION:
        raise ValueError(
            f"{envelope.type} v{envelope.version} is newer than this service knows (v{cls.VERSION})"
        )
    payload = dict(envelope.data)
    for version in range(envelope.version, cls.VERSION):
        payload = cls.UPCASTERS[version](payload)
    return cls.model_validate(payload)

"""The event envelope and the registry that maps a wire type name to its typed model."""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]
NO_UPCASTERS: Mapping[int, Upcaster] = MappingProxyType({})


class Event(BaseModel):
    """Base of every event payload: a stable wire name, an integer version, the owning topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str]
    # Upcasters keyed by the version they upgrade *from*: {1: upcast_v1_v2}. Read-only, so a class
    # that needs some assigns its own mapping instead of adding to one every event shares.
    UPCASTERS: ClassVar[Mapping[int, Upcaster]] = NO_UPCASTERS

    @abstractmethod
    def subject(self) -> str:
        """The Kafka key, which keeps one subject's events in order."""


class OrderEvent(Event):
    """An event about one order: keyed by its id, so all of an order's events stay in order."""

    order_id: str

    def subject(self) -> str:
        return self.order_id


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
    missing = [v for v in range(1, cls.VERSION) if v not in cls.UPCASTERS]
    if missing:
        raise ValueError(f"{cls.TYPE} v{cls.VERSION} has no upcaster from version(s) {missing}")
    REGISTRY[cls.TYPE] = cls
    return cls


class UndecodableEvent(ValueError):
    """An envelope whose data cannot become a current typed event: it goes to the dead-letter topic."""


class UnknownEventType(UndecodableEvent):
    """An envelope whose type no contract describes."""


def decode_data(envelope: Envelope) -> Event:
    """The typed event inside an envelope, upcast to the current version.

    Raises UndecodableEvent (or pydantic's ValidationError, also a ValueError) for anything that is
    not a valid event of a known type and version.
    """
    cls = REGISTRY.get(envelope.type)
    if cls is None:
        raise UnknownEventType(f"unknown event type {envelope.type!r}")
    if envelope.version < 1:
        raise UndecodableEvent(f"{envelope.type} has version {envelope.version}; versions start at 1")
    if envelope.version > cls.VERSION:
        raise UndecodableEvent(
            f"{envelope.type} v{envelope.version} is newer than this service knows (v{cls.VERSION})"
        )
    payload = dict(envelope.data)
    for version in range(envelope.version, cls.VERSION):
        payload = cls.UPCASTERS[version](payload)
    return cls.model_validate(payload)

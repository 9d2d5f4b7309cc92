"""The envelope and the event registry: what every service relies on to read the wire."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import orjson
import pytest

from shared.contracts import (
    REGISTRY,
    Envelope,
    Event,
    FraudDecision,
    FraudScored,
    OrderEvent,
    ProductUpserted,
    UndecodableEvent,
    UnknownEventType,
    decode_data,
)
from shared.contracts.base import JsonDict, Upcaster, register
from shared.contracts.topics import ALL, dead_letter
from shared.kafka import decode, encode, headers_for, new_envelope, reply_to, topic_for

pytestmark = pytest.mark.unit


def test_every_event_type_has_a_stable_name_a_version_and_a_known_topic() -> None:
    assert len(REGISTRY) >= 14
    for name, cls in REGISTRY.items():
        assert name == cls.TYPE and "." in name, "wire names are explicit, never class paths"
        assert cls.VERSION >= 1
        assert cls.TOPIC in ALL


def test_envelope_round_trips_through_bytes_and_headers() -> None:
    event = FraudScored(order_id="o-1", decision=FraudDecision.REVIEW, score=55, reasons=["AMOUNT_HIGH"])
    envelope = new_envelope(event, source="fraud", correlation_id="corr-1")

    decoded = decode(encode(envelope))

    assert decoded == envelope
    assert decode_data(decoded) == event
    assert topic_for(envelope) == "fraud.events"
    headers = dict(headers_for(envelope))
    assert headers["ce_type"] == b"fraud.scored" and headers["ce_subject"] == b"o-1"
    assert set(orjson.loads(encode(envelope))) == {
        "id",
        "type",
        "version",
        "source",
        "time",
        "subject",
        "correlation_id",
        "causation_id",
        "data",
    }


def test_catalog_events_are_keyed_by_sku() -> None:
    product = ProductUpserted(sku="TEA-1", name="Tea", merchant_id="m-1", price_fen=100)
    assert new_envelope(product, source="inventory", correlation_id="c").subject == "TEA-1"


def test_a_reply_carries_the_correlation_and_a_deterministic_id() -> None:
    cause = new_envelope(
        FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1),
        source="fraud",
        correlation_id="c",
    )
    reply = FraudScored(order_id="o-1", decision=FraudDecision.APPROVE, score=1)
    first, again = reply_to(cause, reply, source="x"), reply_to(cause, reply, source="x")
    assert first.id == again.id, "handling the same cause twice emits the same event"
    assert (first.correlation_id, first.causation_id) == ("c", cause.id)


def test_unknown_and_newer_types_are_refused() -> None:
    unknown = Envelope(type="nope.happened", version=1, source="t", subject="s", correlation_id="c", data={})
    with pytest.raises(UnknownEventType):
        decode_data(unknown)
    newer = Envelope(type="fraud.scored", version=99, source="t", subject="s", correlation_id="c", data={})
    with pytest.raises(ValueError, match="newer"):
        decode_data(newer)


def test_old_versions_are_upcast_on_decode() -> None:
    def upcast_v1_v2(payload: JsonDict) -> JsonDict:
        return {**payload, "label": payload.pop("name").upper()}

    class Renamed(OrderEvent):
        TYPE: ClassVar[str] = "test.renamed"
        VERSION: ClassVar[int] = 2
        TOPIC: ClassVar[str] = "order.events"
        UPCASTERS: ClassVar[Mapping[int, Upcaster]] = MappingProxyType({1: upcast_v1_v2})
        label: str

    REGISTRY[Renamed.TYPE] = Renamed
    try:
        old = Envelope(
            type="test.renamed",
            version=1,
            source="t",
            subject="o",
            correlation_id="c",
            data={"order_id": "o", "name": "tea"},
        )
        assert decode_data(old) == Renamed(order_id="o", label="TEA")
    finally:
        del REGISTRY[Renamed.TYPE]


@pytest.mark.parametrize("version", [0, -5])
def test_a_version_below_one_is_undecodable_not_a_crash(version: int) -> None:
    envelope = Envelope(
        type="fraud.scored", version=version, source="t", subject="o", correlation_id="c", data={}
    )
    with pytest.raises(UndecodableEvent, match="versions start at 1"):
        decode_data(envelope)


def test_a_newer_version_without_its_upcasters_cannot_be_registered() -> None:
    class Unreadable(OrderEvent):
        TYPE: ClassVar[str] = "test.unreadable"
        VERSION: ClassVar[int] = 3
        TOPIC: ClassVar[str] = "order.events"
        UPCASTERS: ClassVar[Mapping[int, Upcaster]] = MappingProxyType({2: lambda payload: payload})

    with pytest.raises(ValueError, match=r"no upcaster from version\(s\) \[1\]"):
        register(Unreadable)
    assert "test.unreadable" not in REGISTRY


def test_upcasters_are_not_a_mapping_every_event_shares() -> None:
    with pytest.raises(TypeError):
        Event.UPCASTERS[1] = lambda payload: payload  # type: ignore[index]
    assert all(not cls.UPCASTERS for cls in REGISTRY.values() if cls.VERSION == 1)


def test_order_events_are_keyed_by_their_order() -> None:
    order_scoped = [cls for cls in REGISTRY.values() if issubclass(cls, OrderEvent)]
    assert {cls.TYPE for cls in REGISTRY.values()} - {cls.TYPE for cls in order_scoped} == {
        "inventory.product_upserted",
        "inventory.merchant_upserted",
        "inventory.coupon_upserted",
        "inventory.back_in_stock",
        "inventory.low_stock",
        "analytics.merchant_revenue",
    }
    scored = FraudScored(order_id="o-9", decision=FraudDecision.APPROVE, score=0)
    assert scored.subject() == "o-9"


def test_dead_letter_topics_are_twins() -> None:
    assert dead_letter("order.events") == "order.events.dlq"


def test_undecodable_bytes_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"\x00garbage")

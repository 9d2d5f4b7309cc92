"""Sample values the unit tests of several services share."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from shared.contracts import Event, ShippingAddress
from shared.kafka import Delivery, new_envelope, topic_for

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ADDRESS = ShippingAddress(
    name="Li Lei",
    phone="+86 138 0000 0000",
    province="Zhejiang",
    city="Hangzhou",
    district="Xihu",
    line1="1 Longjing Road",
    postal_code="310000",
)
_offsets = itertools.count()


def delivery(
    event: Event, *, correlation_id: str = "corr", event_id: str | None = None, offset: int | None = None
) -> Delivery:
    """`event` as a consumer receives it from its owning topic."""
    envelope = new_envelope(event, source="test", correlation_id=correlation_id, event_id=event_id)
    return Delivery(envelope, event, topic_for(envelope), 0, next(_offsets) if offset is None else offset)

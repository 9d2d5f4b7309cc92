"""Analytics' two faust agents, each a function of its stream and of where its records go.

route: order.events → each confirmed order, once per merchant on it, keyed by merchant id onto
       BY_MERCHANT_TOPIC, so that one merchant's minutes live in one partition (one worker):
       shared.faust_app.rekey, like every agent there reading records with shared.kafka and never
       yielding.
tally: BY_MERCHANT_TOPIC → the merchant's minute updated in the windowed tables and published, as it
       now stands, to analytics.merchant-revenue (keyed by merchant id).

Both send what they cannot use to order.events.dlq.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from faust.types import StreamT
from prometheus_client import Counter

from services.analytics.handlers import HANDLERS, SERVICE, Tally, merchants_to_count
from shared import faust_app, metrics
from shared.contracts import topics
from shared.faust_app import OutboundRecord, Outputs, Route
from shared.kafka import Delivery, encode, headers_for
from shared.logging import correlation, get_logger

log = get_logger(__name__)

BY_MERCHANT_TOPIC = "analytics-orders-by-merchant"
ROUTE = Route(topics.ORDER_EVENTS, BY_MERCHANT_TOPIC, merchants_to_count)
DEAD_LETTER_TOPIC = ROUTE.dead_letter_topic

LATE_FACTS = Counter(
    "analytics_late_facts_total", "Facts not counted: their minute is older than the kept minutes", ["type"]
)


async def tally(stream: StreamT[bytes], new_tally: Callable[[str], Tally], outputs: Outputs) -> None:
    """Count each re-keyed fact once in its merchant's minute and publish the minute as it stands."""
    async for event in stream.events():
        message = event.message
        counted = _count(message, new_tally)
        if isinstance(counted, str):
            await _dead_letter(outputs, message, f"cannot count: {counted}")
            continue
        delivery, applied = counted
        event_type = type(delivery.event).TYPE
        with correlation(delivery.envelope.correlation_id, order_id=delivery.event.subject()):
            if applied.late:
                LATE_FACTS.labels(event_type).inc()
                log.warning(
                    "too_late_to_count",
                    merchant_id=applied.merchant_id,
                    event_type=event_type,
                    event_time=delivery.envelope.time.isoformat(),
                )
                continue
            for answer in applied.outgoing:
                await outputs.publish(
                    OutboundRecord(answer.subject.encode(), encode(answer), headers_for(answer))
                )
            counter = metrics.EVENTS_DUPLICATE if applied.redelivered else metrics.EVENTS_APPLIED
            counter.labels(SERVICE, event_type).inc()


def _count(message: Any, new_tally: Callable[[str], Tally]) -> tuple[Delivery, Tally] | str:
    """The delivery in `message` and what counting it did; or why analytics cannot count it."""
    try:
        merchant_id = (message.key or b"").decode()
    except UnicodeDecodeError:
        return "the record key is not a merchant id (not UTF-8)"
    if not merchant_id:
        return "the record has no key: whose minute it counts in is unknown"
    return faust_app.apply_record(message, HANDLERS, partial(new_tally, merchant_id), work="analytics counts")


async def _dead_letter(outputs: Outputs, message: Any, error: str) -> None:
    await faust_app.dead_letter(
        outputs.dead_letter, message, service=SERVICE, dead_letter_topic=DEAD_LETTER_TOPIC, error=error
    )

"""faust's aiokafka transport, with the consumer's fetch wait set by us instead of fixed by faust.

faust creates its consumer with fetch_max_wait_ms=1500. A broker whose long poll is not woken by
new records (the embedded one, see INFRA.md) answers an idle partition's fetch only when that wait
is over, so each of fraud's two hops (route, then score) could add up to 1.5 s to an order. Here the
consumer waits KAFKA_FETCH_MAX_WAIT_MS, as every other service's consumer does.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class App(faust.App):
    """A faust App whose consumer waits at most `fetch_max_wait_ms` for a fetch to fill."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.consumer.app
        if isinstance(app, App):
            # Read by AIOKafkaConsumer.start() when it builds its fetcher, which it has not yet.
            consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer

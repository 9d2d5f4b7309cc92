"""Consumer lag of the services' groups: what each has committed against the end of what it reads."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.peaks import PeakSampler
from shared.contracts import topics

# Each service's consumer group and the topics it reads (services/*/main.py; the fraud app's faust
# group also reads its own repartition topic, services/fraud/agents.py BY_CUSTOMER_TOPIC, and so does
# analytics', services/analytics/agents.py BY_MERCHANT_TOPIC).
GROUP_TOPICS: Mapping[str, tuple[str, ...]] = {
    "order": (topics.INVENTORY_EVENTS, topics.FRAUD_EVENTS, topics.PAYMENT_EVENTS),
    "inventory": (topics.ORDER_EVENTS,),
    "payment": (topics.ORDER_EVENTS,),
    "fraud": (topics.ORDER_EVENTS, "fraud-orders-by-customer"),
    "notification": (topics.ORDER_EVENTS,),
    "analytics": (topics.ORDER_EVENTS, "analytics-orders-by-merchant"),
}
SAMPLE_INTERVAL_S = 1.0


class LagSampler(PeakSampler):
    """Samples every group's lag (records behind, summed over its partitions) and keeps each one's max."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(self.lag, SAMPLE_INTERVAL_S, tolerated=(KafkaError,))
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def open(self) -> None:
        await self._admin.start()
        await self._consumer.start()
        await self._consumer.topics()
        for group, group_topics in GROUP_TOPICS.items():
            self._partitions[group] = [
                TopicPartition(topic, partition)
                for topic in group_topics
                for partition in sorted(self._consumer.partitions_for_topic(topic) or ())
            ]

    async def close(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self) -> dict[str, int]:
        every_partition = [tp for partitions in self._partitions.values() for tp in partitions]
        ends = await self._consumer.end_offsets(every_partition)
        beginnings = await self._consumer.beginning_offsets(every_partition)
        lags = {}
        for group, partitions in self._partitions.items():
            committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
            lags[group] = sum(
                ends[tp]
                - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else beginnings[tp])
                for tp in partitions
            )
        return lags

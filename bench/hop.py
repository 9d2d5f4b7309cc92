"""`python -m bench.hop --source T0 --sink T1`: one trivial consume→produce hop of the relay chain.

It consumes and produces exactly as a service does (`shared.kafka.make_consumer` / `make_producer`,
the same batch size, poll timeout and a commit after each batch's sends are acknowledged) and does
nothing else, so a chain of them is the messaging ceiling of the services' topology.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from shared.kafka import make_consumer, make_producer
from shared.runtime import run
from shared.settings import SharedSettings


async def relay(source: str, sink: str, settings: SharedSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = make_consumer(settings, group_id=f"bench-hop-{source}", topics=[source])
    producer = make_producer(settings, client_id=f"bench-hop-{source}")
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            polled = await consumer.getmany(
                timeout_ms=settings.consumer_poll_timeout_ms, max_records=settings.consumer_max_records
            )
            records = [record for batch in polled.values() for record in batch]
            if not records:
                continue
            sent = [
                await producer.send(sink, record.value, key=record.key, headers=list(record.headers))
                for record in records
            ]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hop", description=__doc__)
    parser.add_argument("--source", required=True, help="the topic to consume")
    parser.add_argument("--sink", required=True, help="the topic to produce every record to")
    parser.add_argument("--bootstrap", required=True, help="the Kafka bootstrap servers")
    args = parser.parse_args()
    settings = SharedSettings(kafka_bootstrap_servers=args.bootstrap)
    run(lambda: relay(args.source, args.sink, settings))


if __name__ == "__main__":
    main()

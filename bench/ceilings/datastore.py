"""The datastore alone: single, transactional and batched writes, from one client and from many.

Each client is a separate pymongo client with one connection, as separate service processes would be;
writes use write concern majority, as the services' do.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from bench.plan import Plan
from bench.results import DatastoreRate
from devstack.processes import eventually

Document = dict[str, Any]
Collection = AsyncCollection[Document]
MAJORITY = WriteConcern("majority")
CONCURRENT_CLIENTS = 16
BATCH = 100
# Past this many failed writes a measurement stops: the numbers would say nothing.
MAX_ERRORS = 100
# How long the clients may take to finish the write in hand once a measurement's time is up.
DRAIN_S = 30.0


def _document() -> Document:
    return {"order_id": str(uuid.uuid4()), "status": "PLACED", "note": os.urandom(96).hex()}


async def insert_one(client: AsyncMongoClient[Document], collection: Collection) -> int:  # noqa: ARG001
    await collection.insert_one(_document())
    return 1


async def two_insert_transaction(client: AsyncMongoClient[Document], collection: Collection) -> int:
    async with client.start_session() as session:
        async with await session.start_transaction(
            read_concern=ReadConcern("snapshot"), write_concern=MAJORITY
        ):
            await collection.insert_one(_document(), session=session)
            await collection.insert_one(_document(), session=session)
    return 2


async def batch_transaction(client: AsyncMongoClient[Document], collection: Collection) -> int:
    async with client.start_session() as session:
        async with await session.start_transaction(
            read_concern=ReadConcern("snapshot"), write_concern=MAJORITY
        ):
            await collection.insert_many([_document() for _ in range(BATCH)], session=session)
    return BATCH


Write = Callable[[AsyncMongoClient[Document], Collection], Awaitable[int]]
WRITES: dict[str, Write] = {
    "insert_one": insert_one,
    "transaction of 2 inserts": two_insert_transaction,
    f"transaction of {BATCH} inserts (insert_many)": batch_transaction,
}


async def measure_datastore(url: str, plan: Plan) -> list[DatastoreRate]:
    """Every write kind with 1 and with CONCURRENT_CLIENTS clients, `plan.datastore_s` seconds each."""
    database = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    clients: list[AsyncMongoClient[Document]] = [
        AsyncMongoClient(url, maxPoolSize=1, w="majority", tz_aware=True, serverSelectionTimeoutMS=5000)
        for _ in range(CONCURRENT_CLIENTS)
    ]
    try:
        for client in clients:
            await eventually(_pings(client), bool, what=f"the datastore at {url} to answer", timeout_s=30)
        rates = []
        for index, (operation, write) in enumerate(WRITES.items()):
            for count in (1, CONCURRENT_CLIENTS):
                name = f"w{index}_c{count}"
                # Created beforehand: concurrent transactions that each create it implicitly conflict.
                await clients[0][database].create_collection(name)
                collections = [client[database][name] for client in clients[:count]]
                rates.append(await _measure(operation, write, clients[:count], collections, plan.datastore_s))
        await clients[0].drop_database(database)
        return rates
    finally:
        for client in clients:
            await client.close()


def _pings(client: AsyncMongoClient[Document]) -> Callable[[], Awaitable[bool]]:
    async def ping() -> bool:
        try:
            await client.admin.command("ping")
            return True
        except PyMongoError:
            return False

    return ping


async def _measure(
    operation: str,
    write: Write,
    clients: list[AsyncMongoClient[Document]],
    collections: list[Collection],
    seconds: float,
) -> DatastoreRate:
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + seconds
    totals = {"ops": 0, "docs": 0, "errors": 0}
    first_error: list[str] = []

    async def writer(client: AsyncMongoClient[Document], collection: Collection) -> None:
        while loop.time() < ends_at and totals["errors"] < MAX_ERRORS:
            try:
                docs = await write(client, collection)
            except PyMongoError as error:
                totals["errors"] += 1
                first_error[:] = first_error or [f"{type(error).__name__}: {error}"[:300]]
                continue
            totals["docs"] += docs
            totals["ops"] += 1

    started = loop.time()
    writers = [asyncio.create_task(writer(c, col)) for c, col in zip(clients, collections, strict=True)]
    _, late = await asyncio.wait(writers, timeout=seconds + DRAIN_S)
    for task in late:
        task.cancel()
    elapsed = loop.time() - started
    return DatastoreRate(
        operation=operation,
        clients=len(clients),
        ops_per_s=totals["ops"] / elapsed,
        docs_per_s=totals["docs"] / elapsed,
        errors=totals["errors"],
        first_error=first_error[0] if first_error else None,
    )

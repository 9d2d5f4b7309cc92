"""The store contract suite's database: one real MongoDB-wire server per test run, a fresh db per test.

With TEST_MONGO_URL set the suite uses that server (a real mongod replica set, say) instead of
starting the embedded one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from shared.mongo import Document, MongoStore, make_client
from shared.settings import SharedSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/contract" in str(item.path):
            item.add_marker(pytest.mark.contract)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, process: subprocess.Popen[bytes] | None, deadline_s: float = 30.0) -> None:
    until = time.monotonic() + deadline_s
    client: MongoClient[Document]
    with MongoClient(url, serverSelectionTimeoutMS=500) as client:
        while True:
            try:
                client.admin.command("ping")
                return
            except PyMongoError:
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"the MongoDB stand-in exited with {process.returncode}") from None
                if time.monotonic() > until:
                    raise TimeoutError(f"no MongoDB answered at {url} within {deadline_s}s") from None
                time.sleep(0.1)


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    given = os.environ.get("TEST_MONGO_URL")
    if given:
        _wait_for(given, None)
        yield given
        return
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            ":memory:",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"mongodb://127.0.0.1:{port}"
        _wait_for(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def settings(mongo_url: str) -> SharedSettings:
    return SharedSettings(mongo_url=SecretStr(mongo_url))


@pytest.fixture(scope="session")
async def mongo_client(settings: SharedSettings) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = make_client(settings)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def mongo_store(
    mongo_client: AsyncMongoClient[Document], settings: SharedSettings
) -> AsyncIterator[MongoStore]:
    """A MongoStore on a database of its own, dropped after the test."""
    name = f"contract_{uuid.uuid4().hex[:12]}"
    store = MongoStore(mongo_client, name)
    await store.ensure_plumbing_indexes(settings)
    try:
        yield store
    finally:
        await mongo_client.drop_database(name)

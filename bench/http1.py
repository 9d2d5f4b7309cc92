"""A minimal HTTP/1.1 client over asyncio streams: keep-alive connections and nothing else, so that the
load generator costs little CPU on a machine it shares with the stack it loads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this client reads it."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        return await self._read_response()

    async def _read_response(self) -> Response:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        keep_alive = headers.get("connection", "").lower() != "close"
        return Response(status=int(parts[1]), body=body, keep_alive=keep_alive)

    async def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class ConnectionPool:
    """At most `size` keep-alive connections to one server, opened as needed; requests beyond wait.

    A connection idle for longer than `max_idle_s` is not reused: the server may be closing it
    (uvicorn's keep-alive timeout is 5 s), and an order POST is not safe to retry.
    """

    def __init__(self, host: str, port: int, size: int, max_idle_s: float = 2.0) -> None:
        self._host = host
        self._port = port
        self._slots = asyncio.Semaphore(size)
        self._max_idle_s = max_idle_s
        self._idle: list[tuple[Connection, float]] = []  # most recently used last

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """One request on a pooled connection; a connection that failed or was cancelled is closed."""
        async with self._slots:
            connection = await self._connection()
            try:
                response = await connection.request(method, path, body, headers)
            except BaseException:
                await connection.close()
                raise
            if response.keep_alive:
                self._idle.append((connection, time.monotonic()))
            else:
                await connection.close()
            return response

    async def _connection(self) -> Connection:
        while self._idle:
            connection, idle_since = self._idle.pop()
            if time.monotonic() - idle_since <= self._max_idle_s:
                return connection
            await connection.close()
        return await Connection.open(self._host, self._port)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            await connection.close()

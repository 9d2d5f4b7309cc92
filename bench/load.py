"""Open-loop load: orders arrive at a fixed rate whatever the answers take, as shoppers do.

Each request's latency runs from the moment it was due, so time spent waiting for a free connection
counts (no coordinated omission); `late_s` says how far behind schedule the generator itself was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import orjson

from bench.http1 import ConnectionPool, ProtocolError
from shared.auth import Principal, Role, TokenIssuer
from shared.settings import SharedSettings

NO_ANSWER = 0  # the status recorded when the request failed or timed out
CONNECTIONS = 64
REQUEST_TIMEOUT_S = 30.0
ADDRESS = {
    "name": "Wang Fang",
    "phone": "13700137000",
    "province": "Sichuan",
    "city": "Chengdu",
    "district": "Wuhou",
    "line1": "1 Kehua Rd",
    "postal_code": "610041",
}
# Signs each shopper's token as the platform would (shopctl's key from the environment).
ISSUER = TokenIssuer(SharedSettings())


@dataclass(frozen=True)
class Answer:
    customer_id: str
    status: int
    latency_s: float
    late_s: float
    order_id: str | None


def order_body(sku: str) -> bytes:
    return orjson.dumps(
        {
            "items": [{"sku": sku, "quantity": 1}],
            "shipping_address": ADDRESS,
            "payment": {"method": "bank_card", "token": "tok_approve"},
        }
    )


async def open_loop(
    gateway_url: str, *, rate: float, duration_s: float, sku: str, customer: Callable[[int], str]
) -> list[Answer]:
    """POST `rate` orders a second for `duration_s`, order i from `customer(i)`; every answer, in order."""
    url = urlparse(gateway_url)
    pool = ConnectionPool(url.hostname or "127.0.0.1", url.port or 80, CONNECTIONS)
    loop = asyncio.get_running_loop()
    count = round(rate * duration_s)
    start = loop.time()

    async def place(index: int, due: float) -> Answer:
        customer_id = customer(index)
        body = order_body(sku)
        token = ISSUER.access_token(Principal(customer_id, Role.CUSTOMER))
        late = loop.time() - due
        try:
            # The timeout covers the wait for a free connection too, so a step always ends.
            async with asyncio.timeout(REQUEST_TIMEOUT_S - late):
                response = await pool.request(
                    "POST", "/v1/orders", body, {"Authorization": f"Bearer {token}"}
                )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            return Answer(customer_id, NO_ANSWER, loop.time() - due, late, None)
        order_id = orjson.loads(response.body).get("order_id") if response.status == 202 else None
        return Answer(customer_id, response.status, loop.time() - due, late, order_id)

    tasks = []
    try:
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(place(index, due)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await pool.close()

"""Human-readable order numbers: the local date in China and a per-day sequence from Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

CHINA = ZoneInfo("Asia/Shanghai")
# A day's counter outlives the day by enough for a late repair to still find it.
COUNTER_TTL_S = 3 * 24 * 3600


class OrderNumbers(Protocol):
    async def next(self, now: datetime) -> str:
        """`20261126-000042`: readable over the phone, sortable, unique per day."""
        ...

    async def continue_after(self, order_no: str) -> None:
        """Move the day's sequence past `order_no`; it never moves back."""
        ...


def order_day(now: datetime) -> str:
    """The day an order number belongs to: the local date in China, `20261126`."""
    return now.astimezone(CHINA).strftime("%Y%m%d")


def format_order_no(day: str, sequence: int) -> str:
    return f"{day}-{sequence:06d}"


def parse_order_no(order_no: str) -> tuple[str, int]:
    """(day, sequence) of an order number made by `format_order_no`."""
    day, sequence = order_no.split("-")
    return day, int(sequence)


class RedisOrderNumbers:
    def __init__(self, redis: Redis, prefix: str = "order:order_no") -> None:
        self._redis = redis
        self._prefix = prefix

    async def next(self, now: datetime) -> str:
        day = order_day(now)
        key = f"{self._prefix}:{day}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, COUNTER_TTL_S)
            sequence, _ = await pipe.execute()
        return format_order_no(day, int(sequence))

    async def continue_after(self, order_no: str) -> None:
        """Redis keeps nothing on disk: after it lost a counter, Mongo still holds the orders."""
        day, sequence = parse_order_no(order_no)
        await self._redis.eval(_RAISE_TO, 1, f"{self._prefix}:{day}", sequence, COUNTER_TTL_S)


# Only ever raises the counter, so a repair racing with INCRs cannot hand a number out twice.
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2])) end
return 1
"""

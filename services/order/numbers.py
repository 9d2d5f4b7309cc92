"""Human-readable order numbers: the local date in China and a per-day sequence from Redis."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

CHINA = ZoneInfo("Asia/Shanghai")


class OrderNumbers:
    def __init__(self, redis: Redis, prefix: str = "order:order_no") -> None:
        self._redis = redis
        self._prefix = prefix

    async def next(self, now: datetime) -> str:
        """`20261126-000042`: readable over the phone, sortable, unique per day."""
        day = now.astimezone(CHINA).strftime("%Y%m%d")
        key = f"{self._prefix}:{day}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 3 * 24 * 3600)
            sequence, _ = await pipe.execute()
        return f"{day}-{int(sequence):06d}"

    async def continue_after(self, order_no: str) -> None:
        """Move the day's sequence past `order_no` (Redis lost its counter, Mongo kept orders)."""
        day, sequence = order_no.split("-")
        key = f"{self._prefix}:{day}"
        await self._redis.eval(_RAISE_TO, 1, key, int(sequence))


# Only ever raises the counter, so a repair racing with INCRs cannot hand a number out twice.
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', 259200) end
return 1
"""

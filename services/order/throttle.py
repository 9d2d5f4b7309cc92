"""Per-client rate limits kept in Redis (the `limits` library), so every gateway replica counts
the same requests."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from shared.http import Problem
from shared.logging import get_logger

log = get_logger(__name__)


def rule(text: str) -> RateLimitItem:
    """A limit in the `limits` notation: "600/minute", "10 per hour"."""
    return parse(text)


class Throttle:
    def __init__(self, storage: Storage) -> None:
        self._limiter = FixedWindowRateLimiter(storage)

    @classmethod
    def over_redis(cls, redis_url: str) -> Throttle:
        scheme, _, rest = redis_url.partition("://")
        return cls(
            RedisStorage(
                f"async+{scheme}://{rest}",
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="throttle",
            )
        )

    async def check(self, limit: RateLimitItem, what: str, *identity: str) -> None:
        """Count one request of `identity` against `limit`; past it, a 429 with Retry-After.

        When Redis is down the request goes through: a shop open at 3 a.m. should rather serve
        without limits for a while than refuse every shopper."""
        try:
            if await self._limiter.hit(limit, what, *identity):
                return
            stats = await self._limiter.get_window_stats(limit, what, *identity)
        except StorageError as error:
            log.warning("rate_limit_unavailable", what=what, error=type(error.storage_error).__name__)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise Problem(
            429,
            "Too many requests",
            f"at most {limit.amount} {what} requests per {limit.get_expiry()} s; retry after {retry_after} s",
            code="too-many-requests",
            headers={"Retry-After": str(retry_after)},
        )

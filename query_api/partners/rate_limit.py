"""Per-key rate limits in Redis, exact across processes: the ``limits`` library's moving window.

``limits`` runs the check-and-record as one Lua script on Redis, so two API processes hitting the same key
can never both take the last slot: a key limited to N per unit gets exactly N successes in any window.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from ogp.errors import ServiceUnavailable, TooManyRequests
from ogp.metrics import PARTNER_RATE_LIMITED
from query_api.partners.keys import UNIT_SECONDS, PartnerKey

_ITEMS = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}
NAMESPACE = "ogp-partner-key"


def rate_limit_headers(limit: int, remaining: int, reset_at: float, window_seconds: int, now: float) -> dict[str, str]:
    """IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers), seconds until the window frees."""
    reset = max(0, math.ceil(reset_at - now))
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(reset),
        "RateLimit-Policy": f"{limit};w={window_seconds}",
    }


class KeyRateLimiter:
    """``hit(key)``: records one request for the key or raises 429 with Retry-After."""

    def __init__(self, redis_url: str):
        uri = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
        self.storage = RedisStorage(uri, implementation="redispy", wrap_exceptions=True, key_prefix="ogp")
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, key: PartnerKey) -> dict[str, str]:
        """The RateLimit-* headers for an allowed request; TooManyRequests (429) when over the limit."""
        if key.rate_limit_count is None:
            return {}
        item = _ITEMS[key.rate_limit_unit](key.rate_limit_count)
        try:
            allowed = await self.limiter.hit(item, NAMESPACE, key.id)
            stats = await self.limiter.get_window_stats(item, NAMESPACE, key.id)
        except Exception as exc:  # limits wraps redis errors in its own StorageError
            # Fail closed: without the shared counter the limit could not hold across processes.
            raise ServiceUnavailable("rate limiter unavailable", code="rate_limiter_unavailable") from exc
        now = time.time()
        headers = rate_limit_headers(
            key.rate_limit_count, stats.remaining, stats.reset_time, UNIT_SECONDS[key.rate_limit_unit], now
        )
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(stats.reset_time - now)))
            PARTNER_RATE_LIMITED.labels(key.id).inc()
            raise TooManyRequests(
                "rate limit exceeded for this API key",
                details={"limit": key.rate_limit_count, "unit": key.rate_limit_unit},
                headers=headers,
            )
        return headers

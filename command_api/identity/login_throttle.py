"""Failed-login limits per username and per client IP, counted in Redis so they hold across processes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis.asyncio as aioredis


@dataclass(frozen=True)
class ThrottleState:
    limited: bool
    retry_after: int = 0


def _key(kind: str, value: str) -> str:
    # Hash the identifier: keys are visible to anyone with Redis access and usernames are personal data.
    return f"ogp:login-fail:{kind}:{hashlib.sha256(value.lower().encode()).hexdigest()[:32]}"


class LoginThrottle:
    def __init__(self, redis: aioredis.Redis, max_per_user: int, max_per_ip: int, window_seconds: int):
        self.redis = redis
        self.limits = {"user": max_per_user, "ip": max_per_ip}
        self.window = window_seconds

    async def check(self, username: str, ip: str) -> ThrottleState:
        """Limited when either counter reached its threshold; retry_after is the longer remaining window."""
        keys = {"user": _key("user", username), "ip": _key("ip", ip)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys.values():
                pipe.get(key)
                pipe.pttl(key)
            values = await pipe.execute()
        retry = 0
        for i, kind in enumerate(keys):
            count, ttl_ms = values[2 * i], values[2 * i + 1]
            if count is not None and int(count) >= self.limits[kind]:
                retry = max(retry, max(1, -(-int(ttl_ms) // 1000)) if ttl_ms and ttl_ms > 0 else self.window)
        return ThrottleState(retry > 0, retry)

    async def record_failure(self, username: str, ip: str) -> None:
        # A fixed window that starts at the first failure: INCR then EXPIRE NX, atomically in MULTI.
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (_key("user", username), _key("ip", ip)):
                pipe.incr(key)
                pipe.expire(key, self.window, nx=True)
            await pipe.execute()

    async def record_success(self, username: str) -> None:
        await self.redis.delete(_key("user", username))

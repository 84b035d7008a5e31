"""Breaker openings and 429 cooldowns shared by every gateway process, through Redis.

One hash per prefix, `<prefix>health`, maps `<kind>:<deployment>` to the wall-clock time the state
lasts until. A publish only ever moves a field later and drops fields already past, in one Lua
call; the hash expires with its latest field, so nothing is left behind once every breaker has
closed. Times are epoch seconds, as `Health` keeps them: replicas are assumed to keep their clocks
in sync (NTP), and a skew of a few hundred milliseconds only moves when the next probe goes out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

KEY = "health"
EXPIRY_SLACK_S = 1.0

# KEYS[1]: the hash. ARGV: field, until, now, expiry slack (all seconds).
PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local later = tonumber(ARGV[2])
if current == nil or later > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local latest = 0
for i = 1, #all, 2 do
  local value = tonumber(all[i + 1])
  if value == nil or value <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif value > latest then
    latest = value
  end
end
if latest > 0 then
  redis.call('PEXPIREAT', KEYS[1], math.ceil((latest + tonumber(ARGV[4])) * 1000))
end
return 1
"""


class RedisSharedHealth:
    """`SharedHealth` (routing/health.py) over one Redis hash. Failures raise; `Health` treats the
    shared state as an optimisation and keeps its own."""

    def __init__(self, client: Redis, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._key = f"{prefix}{KEY}"
        self._clock = clock
        self._publish = client.register_script(PUBLISH)

    @classmethod
    def open(cls, url: str, prefix: str, timeout_s: float) -> RedisSharedHealth:
        """Does not connect: a gateway starts while Redis is down, and shares once it is back."""
        pool = BlockingConnectionPool.from_url(
            url, max_connections=4, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0), decode_responses=False)
        return cls(Redis.from_pool(pool), prefix)

    async def publish(self, deployment: str, kind: str, until: float) -> None:
        await self._publish(
            keys=[self._key], args=[f"{kind}:{deployment}", repr(until), repr(self._clock()), EXPIRY_SLACK_S])

    async def snapshot(self) -> dict[tuple[str, str], float]:
        raw = await self._redis.hgetall(self._key)
        out: dict[tuple[str, str], float] = {}
        for field, value in raw.items():
            name = field.decode("utf-8", "replace") if isinstance(field, bytes) else field
            kind, sep, deployment = name.partition(":")
            try:
                until = float(value)
            except ValueError:
                continue
            if sep:
                out[(deployment, kind)] = until
        return out

    async def close(self) -> None:
        await self._redis.aclose()

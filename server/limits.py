"""Per-key limits: concurrent sessions, requests per minute, characters per day.

Held in Redis when Redis is on, so every node counts against the same budget;
in process memory otherwise. Windows are fixed and aligned (the minute, the UTC
day), so "when it resets" is exact. A concurrent-session slot is a member of a
sorted set scored by its expiry: a node that dies without releasing its slots
loses them after ``slot_ttl_s`` instead of leaking them forever; live sessions
refresh theirs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    limit: str  # "sessions", "requests_per_minute", "chars_per_day"
    value: int
    reset_at: float  # epoch seconds; for sessions: when a slot may free up at the latest

    @property
    def retry_after_s(self) -> int:
        return max(1, int(self.reset_at - time.time() + 0.999))

    def message(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reset_at))
        what = {
            "sessions": f"{self.value} concurrent sessions",
            "requests_per_minute": f"{self.value} requests per minute",
            "chars_per_day": f"{self.value} characters per day",
        }[self.limit]
        if self.limit == "sessions":
            return f"limit of {what} per API key reached; it frees when a session ends"
        return (
            f"limit of {what} per API key reached; it resets at {when} (in {self.retry_after_s} s)"
        )


@dataclass(frozen=True, slots=True)
class LimitConfig:
    sessions: int = 0  # 0 = unlimited
    requests_per_minute: int = 0
    chars_per_day: int = 0
    slot_ttl_s: float = 60.0


class Limits(Protocol):
    config: LimitConfig

    async def request(self, kid: str) -> LimitExceeded | None: ...

    async def chars(self, kid: str, n: int) -> LimitExceeded | None: ...

    async def acquire(self, kid: str, slot: str) -> LimitExceeded | None: ...

    async def refresh(self, kid: str, slot: str) -> None: ...

    async def release(self, kid: str, slot: str) -> None: ...


def _minute(now: float) -> tuple[int, float]:
    b = int(now // 60)
    return b, (b + 1) * 60.0


def _day(now: float) -> tuple[int, float]:
    b = int(now // 86400)
    return b, (b + 1) * 86400.0


class MemoryLimits:
    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self._counts: dict[tuple[str, str, int], int] = {}
        self._slots: dict[str, dict[str, float]] = {}

    def _bump(self, kind: str, kid: str, bucket: int, n: int) -> int:
        # drop old windows as we go so the dict stays small
        for k in [k for k in self._counts if k[0] == kind and k[1] == kid and k[2] != bucket]:
            del self._counts[k]
        key = (kind, kid, bucket)
        self._counts[key] = self._counts.get(key, 0) + n
        return self._counts[key]

    async def request(self, kid: str) -> LimitExceeded | None:
        lim = self.config.requests_per_minute
        if not lim:
            return None
        bucket, reset = _minute(time.time())
        if self._bump("rpm", kid, bucket, 1) > lim:
            return LimitExceeded("requests_per_minute", lim, reset)
        return None

    async def chars(self, kid: str, n: int) -> LimitExceeded | None:
        lim = self.config.chars_per_day
        if not lim:
            return None
        bucket, reset = _day(time.time())
        if self._bump("cpd", kid, bucket, 0) + n > lim:
            return LimitExceeded("chars_per_day", lim, reset)
        self._bump("cpd", kid, bucket, n)
        return None

    async def acquire(self, kid: str, slot: str) -> LimitExceeded | None:
        lim = self.config.sessions
        if not lim:
            return None
        now = time.time()
        slots = self._slots.setdefault(kid, {})
        for s in [s for s, exp in slots.items() if exp <= now]:
            del slots[s]
        if len(slots) >= lim:
            return LimitExceeded("sessions", lim, min(slots.values()))
        slots[slot] = now + self.config.slot_ttl_s
        return None

    async def refresh(self, kid: str, slot: str) -> None:
        slots = self._slots.get(kid)
        if slots is not None and slot in slots:
            slots[slot] = time.time() + self.config.slot_ttl_s

    async def release(self, kid: str, slot: str) -> None:
        self._slots.get(kid, {}).pop(slot, None)


# Check-and-add in one step, so two nodes cannot both take the last slot.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, first[2]}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[2]}
"""

# Add only if the total stays within the limit: a refused request does not count.
_ADD_WITHIN = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return v
"""


class RedisLimits:
    def __init__(self, config: LimitConfig, redis: Redis | RedisCluster, prefix: str) -> None:
        self.config = config
        self._r = redis
        self._p = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._add = redis.register_script(_ADD_WITHIN)

    async def _add_within(self, key: str, n: int, lim: int, ttl: int) -> bool:
        return int(await self._add(keys=[key], args=[n, lim, ttl])) >= 0

    async def request(self, kid: str) -> LimitExceeded | None:
        lim = self.config.requests_per_minute
        if not lim:
            return None
        bucket, reset = _minute(time.time())
        if not await self._add_within(f"{self._p}limit:{kid}:rpm:{bucket}", 1, lim, 120):
            return LimitExceeded("requests_per_minute", lim, reset)
        return None

    async def chars(self, kid: str, n: int) -> LimitExceeded | None:
        lim = self.config.chars_per_day
        if not lim:
            return None
        bucket, reset = _day(time.time())
        if not await self._add_within(f"{self._p}limit:{kid}:cpd:{bucket}", n, lim, 2 * 86400):
            return LimitExceeded("chars_per_day", lim, reset)
        return None

    async def acquire(self, kid: str, slot: str) -> LimitExceeded | None:
        lim = self.config.sessions
        if not lim:
            return None
        now = time.time()
        ok, score = await self._acquire(
            keys=[f"{self._p}limit:{kid}:sessions"],
            args=[now, now + self.config.slot_ttl_s, lim, slot, int(self.config.slot_ttl_s * 2)],
        )
        if int(ok):
            return None
        return LimitExceeded("sessions", lim, float(score))

    async def refresh(self, kid: str, slot: str) -> None:
        if self.config.sessions:
            await self._r.zadd(
                f"{self._p}limit:{kid}:sessions",
                {slot: time.time() + self.config.slot_ttl_s},
                xx=True,
            )

    async def release(self, kid: str, slot: str) -> None:
        if self.config.sessions:
            await self._r.zrem(f"{self._p}limit:{kid}:sessions", slot)

"""A global send-rate limit shared by every worker process on every host.

Celery's per-task ``rate_limit`` is enforced per worker process, so N workers send N times the
limit. This limiter keeps one schedule in Redis (the broker) instead: GCRA with reservations.
Each `acquire(n)` atomically reserves the next ``n`` slots in a Lua script, using the Redis
server's clock (so hosts with skewed clocks agree), and returns how long the caller must sleep
before using them. Nobody polls and nobody is starved: callers are served in reservation order.

``LIFECYCLE_NOTICE_RATE_PER_SECOND`` = 0 turns it off (the default).

In the embedded mode (filesystem broker, no Redis) the same algorithm runs on a file under
``var/`` guarded by ``fcntl.flock``: global across the processes of one host, which is all the
embedded mode runs on.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Protocol

import redis

from lifecycle.core.settings import get_settings

NOTICE_KEY = "lifecycle:ratelimit:notice"

# Reserve the next n slots; return microseconds to wait before the first of them may be used.
# The stored value is the theoretical arrival time (TAT) of the next free slot.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * n
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return wait
"""


class RateLimiter(Protocol):
    def acquire(self, n: int = 1) -> float:
        """Block until ``n`` sends are allowed; return the seconds waited."""
        ...


class NoLimit:
    def acquire(self, n: int = 1) -> float:
        return 0.0


class RedisRateLimiter:
    def __init__(self, redis_url: str, rate: float, burst: int = 1, key: str = NOTICE_KEY):

        if rate <= 0:
            raise ValueError("rate must be positive")
        self._client = redis.Redis.from_url(redis_url)
        self._script = self._client.register_script(_GCRA_LUA)
        self.interval_us = max(1, round(1_000_000 / rate))
        self.burst = max(1, burst)
        self.key = key

    def reserve(self, n: int = 1) -> float:
        """Reserve without sleeping; seconds until the reservation may be used."""
        wait_us = self._script(keys=[self.key], args=[self.interval_us, self.burst, n])
        return int(wait_us) / 1_000_000

    def acquire(self, n: int = 1) -> float:
        wait = self.reserve(n)
        if wait > 0:
            time.sleep(wait)
        return wait


class FileRateLimiter:
    """The same reservation scheme on a file (embedded mode: one host, no Redis)."""

    def __init__(self, path: Path, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.path = path
        self.interval = 1.0 / rate
        self.burst = max(1, burst)
        path.parent.mkdir(parents=True, exist_ok=True)

    def reserve(self, n: int = 1) -> float:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).strip()
            now = time.time()
            try:
                tat = float(raw) if raw else 0.0
            except ValueError:
                tat = 0.0
            tat = max(tat, now)
            new_tat = tat + self.interval * n
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{new_tat:.6f}".encode())
            return max(0.0, new_tat - self.burst * self.interval - now)
        finally:
            os.close(fd)  # closing releases the flock

    def acquire(self, n: int = 1) -> float:
        wait = self.reserve(n)
        if wait > 0:
            time.sleep(wait)
        return wait


def chunk_size(rate: float) -> int:
    """Slots reserved per call: one per message at low rates, ~20 calls a second at high ones."""
    return 1 if rate <= 20 else max(1, int(rate // 20))


def notice_limiter() -> RateLimiter:
    s = get_settings()
    rate = s.notice_rate_per_second
    if rate <= 0:
        return NoLimit()
    burst = chunk_size(rate)
    if s.broker_is_redis:
        return RedisRateLimiter(s.broker_url, rate, burst=burst)
    return FileRateLimiter(s.var_dir / "notice-rate.lock", rate, burst=burst)

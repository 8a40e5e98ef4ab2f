"""Client-side rate limiting, so that we stay under a vendor's per-action request budget.

ZEGO allows 10 requests/s per action and AppId (1/s for RTC CloseRoom); exceeding it gets
requests refused. The limit is per account, not per process, so the production limiter keeps its
state in Redis and every worker process draws from one budget. The algorithm is GCRA (the
"generic cell rate algorithm", a token bucket stored as one timestamp): each key holds its
theoretical arrival time ``tat``; a request may go at ``tat - tau`` and pushes ``tat`` on by one
emission interval ``1/rate``. With ``burst=1`` (the default) requests are spaced evenly, which is
the safest reading of "10 per second".

A caller reserves its slot first and then sleeps until it, so waiting callers are served in
order and never spin. If the slot lies further ahead than ``timeout``, nothing is reserved and
:class:`RateLimitTimeout` is raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis


class RateLimitTimeout(Exception):
    """The next free slot for this key is further away than the caller was willing to wait."""

    def __init__(self, key: str, wait: float, timeout: float) -> None:
        self.key = key
        self.wait = wait
        self.timeout = timeout
        super().__init__(f"rate limit for {key}: next slot in {wait:.3f}s, beyond the {timeout:.3f}s timeout")


class Limiter(Protocol):
    def acquire(self, key: str, rate_per_second: float, timeout: float) -> None:
        """Block until a request under ``key`` is allowed, or raise RateLimitTimeout."""
        ...


def _check(rate_per_second: float, timeout: float) -> None:
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    if timeout < 0:
        raise ValueError("timeout must not be negative")


class LocalLimiter:
    """GCRA in this process only (tests, the CLI, a single worker). Thread-safe."""

    def __init__(
        self,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, rate_per_second: float, timeout: float) -> None:
        _check(rate_per_second, timeout)
        interval = 1.0 / rate_per_second
        tau = (self._burst - 1) * interval
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, now), now)
            wait = tat - tau - now
            if wait > timeout:
                raise RateLimitTimeout(key, wait, timeout)
            self._tat[key] = tat + interval
        if wait > 0:
            self._sleep(wait)


# KEYS[1] the key; ARGV interval_us, tau_us, timeout_us. Returns the wait in microseconds
# (0 = go now) or -wait-1 when the slot is beyond the timeout (nothing reserved). Redis TIME is
# the one clock every process shares.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local timeout = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tau - now
if wait < 0 then wait = 0 end
if wait > timeout then return -wait - 1 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return wait
"""


class RedisLimiter:
    """GCRA in Redis, one Lua script per acquisition, shared by every process using the prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "roomwarden:ratelimit:",
        burst: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._client = client
        self._prefix = prefix
        self._burst = burst
        self._sleep = sleep
        self._script = client.register_script(_GCRA_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "roomwarden:ratelimit:", burst: int = 1) -> RedisLimiter:
        """A limiter on its own connection pool to the Redis at ``url``."""
        return cls(redis.Redis.from_url(url), prefix=prefix, burst=burst)

    def acquire(self, key: str, rate_per_second: float, timeout: float) -> None:
        _check(rate_per_second, timeout)
        interval_us = round(1_000_000 / rate_per_second)
        tau_us = (self._burst - 1) * interval_us
        timeout_us = round(timeout * 1_000_000)
        result = int(self._script(keys=[self._prefix + key], args=[interval_us, tau_us, timeout_us]))
        if result < 0:
            raise RateLimitTimeout(key, (-result - 1) / 1_000_000, timeout)
        if result > 0:
            self._sleep(result / 1_000_000)

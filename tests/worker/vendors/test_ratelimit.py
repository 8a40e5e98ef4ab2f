"""Client-side rate limiting: local (one process) and Redis (every worker shares one budget)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from worker.vendors.ratelimit import LocalLimiter, RateLimitTimeout, RedisLimiter

REDIS_URL = os.environ.get("ROOMWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at " + REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    value = f"test:ratelimit:{uuid.uuid4().hex}:"
    yield value
    for key in redis_client.scan_iter(value + "*"):
        redis_client.delete(key)


def test_local_spaces_requests_evenly() -> None:
    """At 10/s the first request goes at once and each next one 0.1 s later (fake clock)."""
    fake = FakeTime()
    limiter = LocalLimiter(clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    times = []
    for _ in range(5):
        limiter.acquire("zego:1:CreateAgentInstance", 10, timeout=5)
        times.append(round(fake.now - start, 6))
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_local_keys_are_independent() -> None:
    """Each action has its own budget: a busy CreateAgentInstance does not delay CloseRoom."""
    fake = FakeTime()
    limiter = LocalLimiter(clock=fake.clock, sleep=fake.sleep)
    limiter.acquire("zego:1:CreateAgentInstance", 1, timeout=5)
    limiter.acquire("zego:1:CloseRoom", 1, timeout=5)
    assert fake.now == 1000.0


def test_local_burst_lets_a_few_through_at_once() -> None:
    """With burst=3 three requests go immediately and the fourth waits one interval."""
    fake = FakeTime()
    limiter = LocalLimiter(burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        limiter.acquire("k", 10, timeout=5)
    assert fake.now == 1000.0
    limiter.acquire("k", 10, timeout=5)
    assert fake.now == pytest.approx(1000.1)


def test_local_timeout_raises_and_reserves_nothing() -> None:
    """A slot further away than the timeout raises RateLimitTimeout and leaves the queue as it was."""
    fake = FakeTime()
    limiter = LocalLimiter(clock=fake.clock, sleep=fake.sleep)
    limiter.acquire("k", 1, timeout=0)
    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire("k", 1, timeout=0.5)
    assert caught.value.wait == pytest.approx(1.0)
    limiter.acquire("k", 1, timeout=2)
    assert fake.now == pytest.approx(1001.0)  # not 1002: the refused call took no slot


def test_local_real_time_21_at_20_per_second() -> None:
    """21 acquisitions at 20/s take about one second of real time, from several threads."""
    limiter = LocalLimiter()
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: [limiter.acquire("k", 20, timeout=5) for _ in range(7)])
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.8


def test_redis_spaces_requests(redis_client: redis.Redis, prefix: str) -> None:
    """The 11th of 11 acquisitions at 10/s does not complete before about one second."""
    limiter = RedisLimiter(redis_client, prefix=prefix)
    started = time.monotonic()
    for _ in range(11):
        limiter.acquire("zego:1:DescribeUsers", 10, timeout=5)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.8


def test_redis_timeout_raises_and_reserves_nothing(redis_client: redis.Redis, prefix: str) -> None:
    """Beyond the timeout nothing is reserved, so the next patient caller is not pushed back."""
    sleeps: list[float] = []
    limiter = RedisLimiter(redis_client, prefix=prefix, sleep=sleeps.append)
    limiter.acquire("k", 1, timeout=0)
    with pytest.raises(RateLimitTimeout):
        limiter.acquire("k", 1, timeout=0.2)
    limiter.acquire("k", 1, timeout=5)
    assert len(sleeps) == 1
    assert 0.8 < sleeps[0] <= 1.0


def _worker(url: str, prefix: str, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = RedisLimiter.from_url(url, prefix=prefix)
    stamps = []
    for _ in range(count):
        limiter.acquire("zego:1:CreateAgentInstance", 10, timeout=10)
        stamps.append(time.time())
    out.put(stamps)


def test_redis_budget_is_shared_across_processes(redis_client: redis.Redis, prefix: str) -> None:
    """Two processes each sending 8 requests at 10/s together still send 10/s: 16 take ~1.5 s."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(REDIS_URL, prefix, 8, out)) for _ in range(2)]
    for p in procs:
        p.start()
    stamps = sorted(out.get(timeout=30) + out.get(timeout=30))
    for p in procs:
        p.join(timeout=10)
    assert len(stamps) == 16
    assert stamps[-1] - stamps[0] >= 1.4  # 15 intervals of 0.1 s, loosely
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) > 0.05  # never two requests in the same slot


def test_nonsense_rates_are_refused() -> None:
    """A zero or negative rate is a programming error, not an infinite wait."""
    with pytest.raises(ValueError, match="rate"):
        LocalLimiter().acquire("k", 0, timeout=1)

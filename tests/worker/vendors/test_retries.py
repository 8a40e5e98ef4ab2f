"""Bounded retries with backoff and jitter (no real waiting: sleep and clock are fakes)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from worker.vendors.retries import RetryPolicy


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def transient(error: BaseException) -> bool:
    return isinstance(error, Transient)


def failing(times: int, error: Exception, result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return calls, fn


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    """Without jitter the waits are base, 2*base, 4*base..., never above cap."""
    policy = RetryPolicy(attempts=6, base=0.25, cap=2.0, jitter="none")
    assert policy.delays() == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_full_jitter_stays_within_the_ceiling_and_varies() -> None:
    """Full jitter draws each wait from [0, ceiling], so retrying workers spread out."""
    policy = RetryPolicy(attempts=4, base=0.25, cap=5.0, rng=random.Random(7))
    samples = [policy.delays() for _ in range(50)]
    for delays in samples:
        assert len(delays) == 3
        assert all(0 <= d <= c for d, c in zip(delays, [0.25, 0.5, 1.0], strict=True))
    assert len({tuple(d) for d in samples}) > 1


def test_transient_failures_are_retried_until_success() -> None:
    """Two transient failures then a success: the caller gets the result after two sleeps."""
    fake = FakeTime()
    calls, fn = failing(2, Transient())
    assert RetryPolicy(attempts=4).call(fn, transient, sleep=fake.sleep, clock=fake.clock) == "ok"
    assert len(calls) == 3
    assert len(fake.sleeps) == 2


def test_permanent_errors_are_never_retried() -> None:
    """A permanent error is raised at once, without sleeping."""
    fake = FakeTime()
    calls, fn = failing(5, Permanent())
    with pytest.raises(Permanent):
        RetryPolicy(attempts=4).call(fn, transient, sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == 1
    assert fake.sleeps == []


def test_attempts_bound_the_retries() -> None:
    """A call that keeps failing transiently is tried ``attempts`` times, then the last error is raised."""
    fake = FakeTime()
    calls, fn = failing(100, Transient())
    with pytest.raises(Transient):
        RetryPolicy(attempts=4).call(fn, transient, sleep=fake.sleep, clock=fake.clock)
    assert len(calls) == 4
    assert len(fake.sleeps) == 3


def test_the_deadline_bounds_the_total_wait() -> None:
    """When the next wait would pass the deadline the error is raised instead of sleeping."""
    fake = FakeTime()
    calls, fn = failing(100, Transient())
    policy = RetryPolicy(attempts=10, base=1.0, cap=10.0, jitter="none", deadline=2.5)
    with pytest.raises(Transient):
        policy.call(fn, transient, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [1.0]  # 1 + 2 would pass 2.5
    assert len(calls) == 2


def test_on_retry_is_told_before_each_sleep() -> None:
    """The hook sees the attempt number, the error and the wait, so callers can log retries."""
    fake = FakeTime()
    seen: list[tuple[int, str, float]] = []
    _calls, fn = failing(2, Transient("boom"))
    RetryPolicy(attempts=3, jitter="none").call(
        fn,
        transient,
        sleep=fake.sleep,
        clock=fake.clock,
        on_retry=lambda n, e, d: seen.append((n, str(e), d)),
    )
    assert seen == [(1, "boom", 0.25), (2, "boom", 0.5)]


def test_nonsense_policies_are_refused() -> None:
    """Zero attempts or a negative deadline is a configuration error, not a silent no-op."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=-1)

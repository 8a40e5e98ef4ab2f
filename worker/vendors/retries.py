"""Bounded retries with exponential backoff and jitter, shared by the vendor clients.

The policy only retries what the caller's predicate calls transient; anything else propagates at
once. Two bounds apply together: a number of attempts and a total deadline, so a call never
spends more than ``deadline`` seconds sleeping between attempts, however the jitter falls.

Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") sleeps a uniform random
time in ``[0, min(cap, base * 2**n)]``: many workers that failed together spread out instead of
retrying in lockstep against a vendor that is already struggling.

Every backoff in roomwarden is one of these policies, not only the vendor clients': the drain's
retry of a callback that failed to apply, a policy action's retry, a session start's retry,
reconciliation's growing recheck interval and the spread of recreations after a mass failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

T = TypeVar("T")

Jitter = Literal["full", "equal", "band", "none"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; ``attempts`` counts the first try."""

    attempts: int = 4
    base: float = 0.25
    cap: float = 5.0
    jitter: Jitter = "full"
    deadline: float | None = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError("deadline must not be negative")

    def ceiling(self, retry: int) -> float:
        """The largest sleep before retry number ``retry`` (0 = the sleep after the first failure)."""
        if retry >= 64:  # past any cap worth having, and 2**retry would overflow a float
            return float(self.cap)
        return float(min(self.cap, self.base * (2 ** max(retry, 0))))

    def delay(self, retry: int) -> float:
        """One jittered sleep before retry number ``retry``."""
        return self.jittered(self.ceiling(retry))

    def jittered(self, ceiling: float) -> float:
        """This policy's jitter applied to a given wait (a vendor's or a policy's own delay)."""
        if self.jitter == "full":
            return self.rng.uniform(0.0, ceiling)
        if self.jitter == "equal":
            return ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
        if self.jitter == "band":  # within 20% either side: keeps the order of waits, breaks ties
            return ceiling * self.rng.uniform(0.8, 1.2)
        return ceiling

    def delays(self) -> list[float]:
        """The sleeps between attempts (``attempts - 1`` of them), freshly jittered."""
        return [self.delay(retry) for retry in range(self.attempts - 1)]

    def call(
        self,
        fn: Callable[[], T],
        is_transient: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> T:
        """Run ``fn`` until it returns, retrying transient failures within both bounds.

        The last error is re-raised when attempts run out or the next sleep would pass the
        deadline. ``on_retry(attempt, error, delay)`` is told before each sleep.
        """
        started = clock()
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as error:
                if attempt >= self.attempts or not is_transient(error):
                    raise
                wait = self.delay(attempt - 1)
                if self.deadline is not None and clock() - started + wait > self.deadline:
                    raise
                if on_retry is not None:
                    on_retry(attempt, error, wait)
                sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


NO_RETRY = RetryPolicy(attempts=1)

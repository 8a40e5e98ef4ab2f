"""Vendor time versus real time.

The vendor defines durations (MaxIdleTime, callback retry delays, the 100 s heartbeat, Coze's
3-minute rule) that tests cannot wait for. ``Clock(scale)`` runs those durations ``scale`` times
faster: with ``scale=120`` the 120 s idle rule fires after one real second. Wall-clock values
that a receiver checks for freshness (callback ``Timestamp``, the API's ±10 min skew window) are
never scaled, so ``now_ms`` is the real wall clock.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._origin = time.monotonic()

    def seconds(self, vendor_s: float) -> float:
        """Real seconds that ``vendor_s`` vendor seconds take."""
        return vendor_s / self.scale

    async def sleep(self, vendor_s: float) -> None:
        await asyncio.sleep(max(0.0, self.seconds(vendor_s)))

    def now_ms(self) -> int:
        """The real wall clock in milliseconds (never scaled)."""
        return time.time_ns() // 1_000_000

    def now_s(self) -> float:
        """The real wall clock in seconds, for the API's timestamp window."""
        return time.time()

    def vendor_now(self) -> float:
        """Vendor seconds since this clock was made: the timeline the vendor bills on (monotonic)."""
        return (time.monotonic() - self._origin) * self.scale

    def vendor_elapsed(self, since_monotonic: float) -> float:
        """Vendor seconds elapsed since a ``time.monotonic()`` reading."""
        return (time.monotonic() - since_monotonic) * self.scale

"""A token bucket: a steady rate with a bounded burst."""
from __future__ import annotations

import time


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; it starts full.

    `clock` (monotonic seconds) is a parameter so tests can drive time. Not thread-safe:
    each user takes from its own bucket on one thread."""

    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic):
        if rate_per_s < 0 or burst < 0:
            raise ValueError(f"a token bucket needs rate >= 0 and burst >= 0, got {rate_per_s}, {burst}")
        self.rate, self.burst = float(rate_per_s), float(burst)
        self._clock = clock
        self._tokens, self._last = self.burst, clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> bool:
        """One token if there is one."""
        return self.take_up_to(1) == 1

    def take_up_to(self, wanted: int) -> int:
        """As many of `wanted` tokens as there are; returns how many were taken."""
        self._refill()
        granted = min(int(wanted), int(self._tokens))
        self._tokens -= granted
        return granted

    def full(self) -> bool:
        """True when the bucket has refilled to its burst (its user has been idle)."""
        self._refill()
        return self._tokens >= self.burst

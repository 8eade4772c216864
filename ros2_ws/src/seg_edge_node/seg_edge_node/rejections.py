"""Why input was refused, and how that is told to people (ROS-free).

Every refused image has a reason from a short fixed list, so diagnostics can show one
counter per reason from the start (0 until it happens) and a log line per reason is
throttled on its own: a flood of one kind of bad frame never hides another kind.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque

# The reasons a camera image is refused, per source. image_conversion raises the first
# five; the runtime adds "registration" (depth not aligned to the colour image).
RGB_REASONS = ("encoding", "step", "size", "truncated", "decode", "header")
DEPTH_REASONS = ("encoding", "step", "size", "truncated", "header", "registration")
REASONS = {"rgb": RGB_REASONS, "depth": DEPTH_REASONS}


class ImageConversionError(ValueError):
    """An image that cannot be used; the text says what is wrong, `reason` which kind it is."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ThrottledLog:
    """At most one line per key every `interval_s`; the next one says how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float, clock=time.monotonic):
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def log(self, level: int, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged less than `interval_s` ago; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] += 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += f" ({held} more like this in the last {now - last:.0f} s)"
        self._log.log(level, message)
        return True


class RecentEvents:
    """Counts of named events within the last `window_s` seconds."""

    def __init__(self, window_s: float, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[tuple[float, str]] = deque()

    def add(self, name: str) -> None:
        with self._lock:
            self._events.append((self._clock(), name))
            self._prune()

    def counts(self) -> Counter[str]:
        with self._lock:
            self._prune()
            return Counter(name for _, name in self._events)

    def _prune(self) -> None:
        horizon = self._clock() - self.window_s
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()
        # A flood of bad frames must not grow this without bound.
        while len(self._events) > 100_000:
            self._events.popleft()

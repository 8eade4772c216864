"""Thread-safe counters of what a process saw (frames received, refused by reason, ...)."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable


class Counters:
    """Named event counts, safe to add to from several threads.

    Names given up front read 0 until they happen, so a dashboard or a diagnostics array
    shows every counter from the start; other names appear when first counted."""

    def __init__(self, names: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in names})

    def add(self, name: str, n: int = 1) -> int:
        """Count `n` events of `name`; returns the new total."""
        with self._lock:
            self._counts[name] += n
            return self._counts[name]

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of every count."""
        with self._lock:
            return dict(self._counts)

"""Counters, frame rate and latency percentiles for the node's diagnostics."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

import numpy as np

from seg_core import Counters


class NodeStats:
    # After this long without a finished frame the rate is reported as 0, not as the
    # rate of the last frames seen, so a stalled camera shows up in diagnostics.
    STALE_AFTER_S = 3.0

    def __init__(self, counters: Iterable[str] = (), window: int = 300):
        self.counters = Counters(counters)
        self._lock = threading.Lock()   # the windows below
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._engine_ms: deque[float] = deque(maxlen=window)
        self._done_at: deque[float] = deque(maxlen=window)

    def count(self, name: str, n: int = 1) -> None:
        self.counters.add(name, n)

    def frame_done(self, latency_ms: float, engine_ms: float) -> None:
        self.counters.add("frames_segmented")
        with self._lock:
            self._latency_ms.append(latency_ms)
            self._engine_ms.append(engine_ms)
            self._done_at.append(time.monotonic())

    def snapshot(self) -> dict[str, float]:
        snap: dict[str, float] = dict(self.counters.snapshot())
        with self._lock:
            done = list(self._done_at)
            if done and time.monotonic() - done[-1] > self.STALE_AFTER_S:
                snap["rate_hz"] = 0.0
            elif len(done) >= 2 and done[-1] > done[0]:
                snap["rate_hz"] = (len(done) - 1) / (done[-1] - done[0])
            for name, values in (("latency_ms", self._latency_ms), ("engine_ms", self._engine_ms)):
                if values:
                    p50, p99 = np.percentile(np.fromiter(values, float), [50, 99])
                    snap[f"{name}_p50"], snap[f"{name}_p99"] = float(p50), float(p99)
        return snap

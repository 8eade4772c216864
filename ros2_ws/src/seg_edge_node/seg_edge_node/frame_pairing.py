"""Pair RGB and depth messages by header stamp (an approximate-time synchronizer).

message_filters is not available from PyPI, and the node needs counters for
what could not be paired, so this is a small one: each side keeps a short
buffer; a new message looks for the closest stamp on the other side within
the tolerance; what ages out unpaired is counted and dropped.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class Pair:
    rgb: Any
    depth: Any
    stamp_ns: int


class StampPairer:
    def __init__(self, tolerance_ns: int, timeout_ns: int, buffer_size: int = 8):
        self._tol = tolerance_ns
        self._timeout = timeout_ns
        self._rgb: deque[tuple[int, Any]] = deque(maxlen=buffer_size)
        self._depth: deque[tuple[int, Any]] = deque(maxlen=buffer_size)
        self._lock = threading.Lock()
        self.rgb_without_depth = 0
        self.depth_without_rgb = 0

    def add_rgb(self, stamp_ns: int, msg: Any) -> Pair | None:
        with self._lock:
            return self._add(stamp_ns, msg, self._rgb, self._depth, rgb_side=True)

    def add_depth(self, stamp_ns: int, msg: Any) -> Pair | None:
        with self._lock:
            return self._add(stamp_ns, msg, self._depth, self._rgb, rgb_side=False)

    def _add(self, stamp, msg, own: deque, other: deque, rgb_side: bool) -> Pair | None:
        self._expire(stamp)
        best = min(range(len(other)), key=lambda i: abs(other[i][0] - stamp), default=None)
        if best is not None and abs(other[best][0] - stamp) <= self._tol:
            other_stamp, other_msg = other[best]
            # Anything older than the match can no longer pair with a newer frame.
            for _ in range(best + 1):
                other.popleft()
            self._count_unpaired(own_is_rgb=not rgb_side, n=best)
            return Pair(msg, other_msg, stamp) if rgb_side else Pair(other_msg, msg, other_stamp)
        if len(own) == own.maxlen:
            self._count_unpaired(own_is_rgb=rgb_side, n=1)
        own.append((stamp, msg))
        return None

    def _expire(self, now_stamp: int) -> None:
        for buf, is_rgb in ((self._rgb, True), (self._depth, False)):
            while buf and now_stamp - buf[0][0] > self._timeout:
                buf.popleft()
                self._count_unpaired(is_rgb, 1)

    def _count_unpaired(self, own_is_rgb: bool, n: int) -> None:
        if own_is_rgb:
            self.rgb_without_depth += n
        else:
            self.depth_without_rgb += n

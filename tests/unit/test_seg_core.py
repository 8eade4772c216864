"""seg_core: the token bucket, the counters and the config error every check raises."""
from __future__ import annotations

import threading

import pytest

from seg_core import ConfigError, Counters, TokenBucket


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_to_burst_only():
    clock = Clock()
    b = TokenBucket(1.0, 3, clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 100.0
    assert b.full()
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 100.5
    assert not b.take()
    clock.now = 101.0
    assert b.take() and not b.full()


def test_token_bucket_grants_part_of_a_request():
    clock = Clock()
    b = TokenBucket(10.0, 64, clock)
    assert b.take_up_to(100) == 64
    assert b.take_up_to(5) == 0
    clock.now = 0.35
    assert b.take_up_to(5) == 3


def test_a_zero_bucket_gives_nothing():
    b = TokenBucket(0.0, 0, Clock())
    assert not b.take() and b.take_up_to(10) == 0


def test_token_bucket_refuses_negative_settings():
    with pytest.raises(ValueError, match="rate >= 0"):
        TokenBucket(-1.0, 3)


def test_counters_start_at_zero_and_count_across_threads():
    c = Counters(["received", "refused"])
    assert c.snapshot() == {"received": 0, "refused": 0}

    def work():
        for _ in range(10_000):
            c.add("received")
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c["received"] == 40_000 and c.add("new", 2) == 2
    assert c.snapshot() == {"received": 40_000, "refused": 0, "new": 2}


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        raise ConfigError("x")

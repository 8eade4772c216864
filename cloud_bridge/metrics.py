"""Prometheus metrics of the bridge and of the lifelong trainer job.

The bridge's counters stay where they are counted (BridgeService.stats()); a collector
reads them at scrape time, so the service does not count twice. Only what has no
counter there is observed here: the refinement time histogram.

Bridge:  seg_bridge_frames_received_total, seg_bridge_frames_stored_total,
         seg_bridge_frames_refused_total{reason}, seg_bridge_refine_seconds (histogram),
         seg_bridge_inbox_depth, seg_bridge_store_errors_total, seg_bridge_results_published_total,
         seg_bridge_broker_connected, seg_bridge_evicted_total, seg_bridge_over_receive_maximum_total
Trainer: seg_trainer_runs_total{outcome}, seg_trainer_run_seconds, seg_trainer_pending_frames,
         seg_trainer_running
"""
from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Refinement takes ~0.05 s (regions, small frames) to tens of seconds (SAM vit_h on a CPU).
REFINE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)
# Why a payload on the hard-frame topic did not become a new sample (BridgeService counter -> reason).
REFUSED = {"rejected": "malformed", "duplicate": "duplicate", "failed": "refine_failed"}


class _BridgeCollector:
    def __init__(self, stats: Callable[[], dict]):
        self._stats = stats

    def collect(self):
        s = self._stats()
        yield _counter("seg_bridge_frames_received_total", "payloads taken from the hard-frame topic",
                       s.get("received", 0) + s.get("rejected", 0))
        yield _counter("seg_bridge_frames_stored_total", "new samples stored", s.get("refined", 0))
        refused = CounterMetricFamily("seg_bridge_frames_refused_total",
                                      "payloads that did not become a new sample, by reason", labels=["reason"])
        for counter, reason in REFUSED.items():
            refused.add_metric([reason], s.get(counter, 0))
        yield refused
        yield _counter("seg_bridge_store_errors_total",
                       "tries that found the sample store unavailable (the frame waits and is tried again)",
                       s.get("store_errors", 0))
        yield _counter("seg_bridge_results_published_total", "refined results handed to the broker",
                       s.get("published", 0))
        yield _counter("seg_bridge_evicted_total", "samples evicted over the replay buffer's cap",
                       s.get("evicted", 0))
        yield _counter("seg_bridge_over_receive_maximum_total",
                       "frames the broker sent beyond broker.receive_maximum", s.get("over_receive_maximum", 0))
        yield GaugeMetricFamily("seg_bridge_inbox_depth", "frames received and waiting for a worker",
                                value=s.get("queued", 0))
        yield GaugeMetricFamily("seg_bridge_broker_connected", "1 while subscribed at the broker",
                                value=s.get("subscribed", 0))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    # prometheus_client appends _total to counter families itself.
    return CounterMetricFamily(name.removesuffix("_total"), doc, value=value)


class BridgeMetrics:
    def __init__(self, stats: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.registry.register(_BridgeCollector(stats))
        self.refine_seconds = Histogram("seg_bridge_refine_seconds", "time to refine one hard frame",
                                        buckets=REFINE_BUCKETS, registry=self.registry)


class TrainerMetrics:
    """lifelong.main's observer: how each run ended."""

    OUTCOMES = ("published", "blocked", "not_triggered", "busy", "failed")

    def __init__(self):
        self.registry = CollectorRegistry()
        self.runs = Counter("seg_trainer_runs_total", "trainer runs by outcome (busy: another trainer held the lease)",
                            ["outcome"], registry=self.registry)
        for outcome in self.OUTCOMES:
            self.runs.labels(outcome)
        self.run_seconds = Histogram("seg_trainer_run_seconds", "time from start to the run's outcome",
                                     buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400), registry=self.registry)
        self.pending_frames = Gauge("seg_trainer_pending_frames", "labelled frames not yet trained on",
                                    registry=self.registry)
        self.running = Gauge("seg_trainer_running", "1 while a run is in progress", registry=self.registry)
        self._started = time.monotonic()
        self.outcome: str | None = None

    def pending(self, n: int) -> None:
        self.pending_frames.set(n)
        self.running.set(1)

    def finished(self, outcome: str) -> None:
        self.outcome = outcome
        self.runs.labels(outcome).inc()
        self.run_seconds.observe(time.monotonic() - self._started)
        self.running.set(0)

"""Lifelong training as a job (a Kubernetes CronJob, a compose service), on any host
that reaches the sample store: `cloud_bridge.lifelong`'s run with the service
conventions around it.

    python -m cloud_bridge.trainer_job [--http-port 9101] [--log-json] -- \\
        --config bridge.yaml --current /models/current.pth --publish --signing-key KEY ...

Everything after the job's own options is lifelong's command line. With
store.backend: postgres the trainer reads the shared store, keeps its bookkeeping in
the database and holds the lifelong lease for training and publishing together: a
second trainer started meanwhile reports `busy` and does nothing (exit 0). While it
runs, /healthz, /readyz and /metrics (seg_trainer_*) are served on --http-port.
"""
from __future__ import annotations

import argparse
import sys

from .json_logs import configure_logging
from .metrics import TrainerMetrics
from .ops_config import HttpConfig
from .service_http import ProbeServer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run one lifelong training job (cloud_bridge.lifelong) with probes, "
                                             "metrics and JSON logs; lifelong's options follow.", add_help=True)
    ap.add_argument("--http-port", type=int, default=0, help="serve /healthz, /readyz, /metrics (0 = off)")
    ap.add_argument("--http-host", default="0.0.0.0")
    ap.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    ap.add_argument("--log-level", default="INFO")
    args, rest = ap.parse_known_args(argv)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    configure_logging(args.log_level, args.log_json, plain_format="%(message)s")
    from . import lifelong   # torch: after the options are known to be fine

    metrics = TrainerMetrics()
    server = None
    if args.http_port:
        def live() -> tuple[bool, str]:
            return True, "running"

        def ready() -> tuple[bool, str]:
            return metrics.outcome is None, "training" if metrics.outcome is None else f"finished: {metrics.outcome}"

        server = ProbeServer(HttpConfig(args.http_port, args.http_host), metrics.registry, live, ready).start()
    try:
        return lifelong.main(rest, observer=metrics)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())

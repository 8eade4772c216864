"""Lifelong training as a job on the shared PostgreSQL store: two trainers (two
"hosts": separate output and model directories) started at the same time publish one
version between them; a later trainer elsewhere sees the first one's marker and
versions in the database. The lease itself: one holder, expiry, fencing. And the
trainer's and bridge's probes and metrics over HTTP.

    .venv/bin/python -m pytest tests/test_trainer_job.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cloud_bridge.lifelong_ledger import LedgerBusy, PgLedger
from cloud_bridge.metrics import BridgeMetrics, TrainerMetrics
from cloud_bridge.ops_config import HttpConfig, PostgresConfig
from cloud_bridge.pg_db import PgDatabase
from cloud_bridge.pg_store import PgSampleStore
from cloud_bridge.service_http import ProbeServer
from seg_harness.local_cloud import free_port
from segwire.model_keys import generate_keypair
from test_lifelong import new_task_sample, write_index
from test_lifelong_publish import candidate

pytestmark = pytest.mark.timeout(300)
REPO_ROOT = Path(__file__).resolve().parents[1]


def trainer_yaml(path: Path, port: int, dsn: str, password_file: str, data: Path, host: str) -> Path:
    old_train, old_val = data / "old_train.txt", data / "old_val.txt"
    path.write_text(
        f"bridge_id: trainer-{host}\nstorage_dir: {path.parent / host}\n"
        f"broker: {{host: 127.0.0.1, port: {port}}}\n"
        f"store:\n  backend: postgres\n  postgres: {{dsn: '{dsn}', password_file: {password_file}}}\n"
        f"lifelong:\n  output_dir: {path.parent / host / 'lifelong'}\n  min_new_samples: 5\n"
        f"  old_task_index: {old_val}\n  rehearsal: {{index: {old_train}, ratio: 1.0}}\n"
        "  train: {epochs: 1, batch_size: 4, input_height: 64, input_width: 96, augment: false}\n"
        "  gate: {min_new_gain: -1.0, max_old_drop: 1.0}\n")
    return path


def trainer(config: Path, current: Path, key: Path, model_dir: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_bridge.trainer_job", "--log-json", "--", "--config", str(config),
         "--current", str(current), "--threads", "1", "--publish", "--signing-key", str(key),
         "--model-dir", str(model_dir), "--serve-for", "0.5", *map(str, extra)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_trainers_at_once_publish_one_version_and_a_third_elsewhere_continues(tmp_path, broker, pg_database):
    dsn, password_file = pg_database
    data = tmp_path / "data"
    data.mkdir()
    write_index(data, "old_train", 4, seed=1), write_index(data, "old_val", 2, seed=2)
    with PgSampleStore.open(dsn, PostgresConfig(password_file=password_file)) as store:
        for i in (0, 1, 2, 3, 7):   # 4 training frames, 1 held out
            store.put(new_task_sample(i, np.random.default_rng(i), "sam"))
    current = candidate(tmp_path / "current.pth", num_classes=3, seed=0)
    key, _ = generate_keypair(tmp_path / "keys", "fleet-test")
    configs = {h: trainer_yaml(tmp_path / f"{h}.yaml", broker.port, dsn, password_file, data, h)
               for h in ("host-a", "host-b", "host-c")}

    procs = {h: trainer(configs[h], current, key, tmp_path / h / "published") for h in ("host-a", "host-b")}
    outputs = {h: p.communicate(timeout=240) for h, p in procs.items()}
    for h, p in procs.items():
        assert p.returncode == 0, (h, outputs[h])
    published = [h for h, (out, _) in outputs.items() if "candidate 1: PUBLISH" in out]
    busy = [h for h, (out, _) in outputs.items() if "another trainer holds the lifelong lease" in out]
    assert len(published) == 1 and len(busy) == 1 and published != busy, outputs
    assert "as model version 1" in outputs[published[0]][0]
    assert not (tmp_path / busy[0] / "published").exists(), "the busy trainer published"
    logs = [json.loads(line) for line in outputs[published[0]][1].splitlines() if line.startswith("{")]
    assert any("lease 'lifelong:default' taken" in entry["message"] for entry in logs), "no JSON log lines"

    ledger = PgLedger(PgDatabase(dsn, PostgresConfig(password_file=password_file)), tmp_path / "x")
    assert ledger.published_versions("default") == [(1, "published", ledger.published_versions("default")[0][2])]
    assert [d["candidate_id"] for d in ledger.decisions()] == [1]

    # A trainer on a third host: the marker in the database says nothing is new ...
    out, err = trainer(configs["host-c"], current, key, tmp_path / "host-c" / "published").communicate(timeout=120)
    assert "not triggered: 0 new labelled frames" in out, (out, err)
    # ... until the bridges store new frames; then it publishes version 2, although its own
    # model directory is empty.
    with PgSampleStore.open(dsn, PostgresConfig(password_file=password_file)) as store:
        for i in (10, 11, 12, 13, 14):
            store.put(new_task_sample(i, np.random.default_rng(i), "sam"))
    run = trainer(configs["host-c"], current, key, tmp_path / "host-c" / "published")
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0 and "candidate 2: PUBLISH" in out and "as model version 2" in out, (out, err)
    assert [v for v, state, _ in ledger.published_versions("default")] == [1, 2]
    assert all(state == "published" for _, state, _ in ledger.published_versions("default"))
    ledger.db.close()


def test_the_lease_has_one_holder_expires_when_not_renewed_and_fences_a_lapsed_holder(pg_database):
    dsn, password_file = pg_database
    db = PgDatabase(dsn, PostgresConfig(password_file=password_file))
    a = PgLedger(db, "/tmp/unused", holder="trainer@a", lease_ttl_s=3)
    b = PgLedger(db, "/tmp/unused", holder="trainer@b", lease_ttl_s=3)
    try:
        with a.run_lock():
            with pytest.raises(LedgerBusy, match="trainer@a"):
                with b.run_lock():
                    pass
            time.sleep(4)   # longer than the ttl: a's renewals keep it
            assert a.lease.current().holder == "trainer@a"
            assert a.reserve_version("fleet", 0) == 1
            a.confirm_version("fleet", 1, "ab" * 32)
            a.lease._stop.set()   # a stalls (paused, cut off): no more renewals
            time.sleep(3.5)
            with b.run_lock():   # the lease expired: b takes it
                assert b.reserve_version("fleet", 0) == 2
                with pytest.raises(LedgerBusy, match="no longer held by trainer@a"):
                    a.reserve_version("fleet", 0)   # fenced: a cannot publish on a lapsed lease
                b.cancel_version("fleet", 2)
        assert [v for v, *_ in a.published_versions("fleet")] == [1]
    finally:
        db.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_probes_and_metrics_over_http():
    stats = {"received": 7, "rejected": 2, "refined": 5, "duplicate": 1, "failed": 1, "store_errors": 3,
             "queued": 4, "subscribed": 1}
    bridge = BridgeMetrics(lambda: dict(stats))
    bridge.refine_seconds.observe(0.3)
    ready = {"ok": True}
    server = ProbeServer(HttpConfig(free_port(), "127.0.0.1"), bridge.registry, lambda: (True, "fine"),
                         lambda: (ready["ok"], "why")).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, text = get(base + "/metrics")
        assert code == 200
        for line in ('seg_bridge_frames_received_total 9.0', 'seg_bridge_frames_stored_total 5.0',
                     'seg_bridge_frames_refused_total{reason="malformed"} 2.0',
                     'seg_bridge_frames_refused_total{reason="duplicate"} 1.0',
                     'seg_bridge_frames_refused_total{reason="refine_failed"} 1.0',
                     'seg_bridge_store_errors_total 3.0', 'seg_bridge_inbox_depth 4.0',
                     'seg_bridge_refine_seconds_bucket{le="0.5"} 1.0', 'seg_bridge_refine_seconds_count 1.0'):
            assert line in text, line
        assert get(base + "/healthz") == (200, '{"ok": true, "detail": "fine"}')
        assert get(base + "/readyz")[0] == 200
        ready["ok"] = False
        assert get(base + "/readyz") == (503, '{"ok": false, "detail": "why"}')
        assert get(base + "/nothing")[0] == 404
    finally:
        server.stop()

    t = TrainerMetrics()
    t.pending(12)
    t.finished("busy")
    server = ProbeServer(HttpConfig(free_port(), "127.0.0.1"), t.registry, lambda: (True, ""),
                         lambda: (False, "")).start()
    try:
        text = get(f"http://127.0.0.1:{server.port}/metrics")[1]
        assert 'seg_trainer_runs_total{outcome="busy"} 1.0' in text
        assert 'seg_trainer_runs_total{outcome="published"} 0.0' in text
        assert "seg_trainer_pending_frames 12.0" in text and "seg_trainer_running 0.0" in text
    finally:
        server.stop()

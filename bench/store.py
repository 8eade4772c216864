#!/usr/bin/env python3
"""Sample store benchmark: SQLite (WAL + PNG files) and PostgreSQL (bytea) with 1, 2 and
4 concurrent writer processes, as bridge replicas write.

Each writer is a separate process with its own store connection, putting 480x640 RGB-D
samples (synthetic camera frames, edge + refined labels, per-pixel confidence: what the
bridge stores for a hard frame; PNG encoding is part of a put, as in the bridge). Frames
are dealt to the writers in turn, as the shared subscription deals them to replicas; with
two or more writers every `--redeliver`-th frame is also put by the next writer at about
the same time (a redelivery racing the original), so idempotence is exercised at every
level. Per configuration, `--repeats` runs on a fresh store each; figures are medians
over the runs:

- stores_per_s: samples stored / wall time from the common start to the last writer's end;
- put_p99_ms: 99th percentile of put() latency over every put of the run;
- lost / duplicated: frames missing from the store, and rows beyond one per frame
  (checked by listing the store after each run); both must be 0.

Target (issue 11): PostgreSQL with 4 writers >= 4x the fleet's need at the default upload
budget for 100 robots: 100 x 6 frames/min = 10 frames/s -> 40 stores/s.

  .venv/bin/python bench/store.py --json [--frames 80] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLEET_FRAMES_PER_S = 100 * 6 / 60.0
TARGET_FACTOR = 4
H, W = 480, 640

WRITER = r"""
import json, sys, time
import numpy as np
from cloud_bridge.sample_store import Sample, SqliteSampleStore
from seg_harness.synthetic_camera import synthetic_frame

spec, indices, go = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]

def sample(i):
    rgb, depth = synthetic_frame(i, %(h)d, %(w)d)
    labels = np.where(depth > 0, (depth * 3).astype(np.uint8) %% 30, 10).astype(np.uint8)
    return Sample(frame_uuid=f"bench-{i:06d}", robot_id=f"dog{i %% 100}", stamp_ns=i, frame_id="camera",
                  edge_model_version="0123456789ab", mining_policy="confidence", mining_score=0.5,
                  label_source="sam", refiner="bench", received_at=time.time(), rgb=rgb, depth_m=depth,
                  edge_labels=labels, labels=labels, tags={"task": "bench"},
                  label_confidence=np.full(labels.shape, 200, np.uint8))

if spec["backend"] == "sqlite":
    store = SqliteSampleStore(spec["directory"])
else:
    from cloud_bridge.ops_config import PostgresConfig
    from cloud_bridge.pg_store import PgSampleStore
    store = PgSampleStore.open(spec["dsn"], PostgresConfig(password_file=spec["password_file"]))
frames = {i: sample(i) for i in indices}      # made before the start: only storing is timed
print("ready", flush=True)
while not __import__("os").path.exists(go):
    time.sleep(0.002)
latencies, stored = [], 0
for i in indices:
    t = time.perf_counter()
    stored += store.put(frames[i])
    latencies.append(time.perf_counter() - t)
print(json.dumps({"latencies": latencies, "stored": stored, "end": time.time()}), flush=True)
store.close()
""" % {"h": H, "w": W}


def assignments(frames: int, writers: int, redeliver: int) -> list[list[int]]:
    """Every frame to one writer in turn; with 2+ writers every `redeliver`-th frame also to
    the next writer, at the same place in its list, so that the two copies race."""
    out = [[] for _ in range(writers)]
    for i in range(frames):
        out[i % writers].append(i)
        if writers > 1 and i % redeliver == 0:
            out[(i + 1) % writers].append(i)
    for lst in out:
        lst.sort()
    return out


def run_once(spec: dict, frames: int, writers: int, redeliver: int, scratch: Path) -> dict:
    go = scratch / f"go-{time.time_ns()}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(spec), json.dumps(idx), str(go)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
             for idx in assignments(frames, writers, redeliver)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"writer failed: {line}{p.stderr.read()}")
    start = time.time()
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"writer failed: {err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["end"] for r in results) - start
    latencies = sorted(x for r in results for x in r["latencies"])
    uuids = _stored_uuids(spec)
    expected = {f"bench-{i:06d}" for i in range(frames)}
    return {"stores_per_s": frames / wall, "put_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "put_p50_ms": 1000 * latencies[len(latencies) // 2], "puts": len(latencies),
            "stored_true": sum(r["stored"] for r in results),
            "lost": len(expected - set(uuids)), "duplicated": len(uuids) - len(set(uuids)),
            "unexpected": len(set(uuids) - expected)}


def _stored_uuids(spec: dict) -> list[str]:
    if spec["backend"] == "sqlite":
        from cloud_bridge.sample_store import SqliteSampleStore
        with SqliteSampleStore(spec["directory"]) as s:
            return [i.frame_uuid for i in s.list(limit=10**6)]
    import psycopg
    password = Path(spec["password_file"]).read_text().strip()
    with psycopg.connect(spec["dsn"], password=password) as conn:   # raw rows: a duplicate would show
        return [r[0] for r in conn.execute("SELECT frame_uuid FROM samples")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--frames", type=int, default=80, help="distinct frames per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--redeliver", type=int, default=4, help="with 2+ writers, every Nth frame is put twice")
    args = ap.parse_args(argv)

    from seg_harness.local_postgres import LocalPostgres

    scratch = Path(tempfile.mkdtemp(prefix="bench-store-"))
    pg = LocalPostgres(register=False).start()
    results: dict = {"frame": f"{W}x{H} RGB-D + edge labels + labels + confidence",
                     "frames_per_run": args.frames, "repeats": args.repeats, "redeliver_every": args.redeliver,
                     "fleet_need_frames_per_s": FLEET_FRAMES_PER_S,
                     "target_stores_per_s": TARGET_FACTOR * FLEET_FRAMES_PER_S, "backends": {}}
    try:
        for backend in ("sqlite", "postgres"):
            per_backend = results["backends"][backend] = {}
            for writers in args.writers:
                runs = []
                for r in range(args.repeats):
                    name = f"{backend}_{writers}_{r}"
                    if backend == "sqlite":
                        spec = {"backend": "sqlite", "directory": str(scratch / name)}
                    else:
                        spec = {"backend": "postgres", "dsn": pg.create_database(name),
                                "password_file": str(pg.password_file)}
                    runs.append(run_once(spec, args.frames, writers, args.redeliver, scratch))
                    if backend == "sqlite":
                        shutil.rmtree(scratch / name)
                per_backend[f"writers_{writers}"] = {
                    "stores_per_s": round(statistics.median(x["stores_per_s"] for x in runs), 1),
                    "put_p99_ms": round(statistics.median(x["put_p99_ms"] for x in runs), 1),
                    "put_p50_ms": round(statistics.median(x["put_p50_ms"] for x in runs), 1),
                    "puts_per_run": runs[0]["puts"],
                    "lost": sum(x["lost"] for x in runs), "duplicated": sum(x["duplicated"] for x in runs),
                    "unexpected": sum(x["unexpected"] for x in runs),
                    "put_returned_true_per_run": [x["stored_true"] for x in runs],
                    "runs_stores_per_s": [round(x["stores_per_s"], 1) for x in runs]}
                if not args.json:
                    print(backend, writers, per_backend[f"writers_{writers}"], flush=True)
    finally:
        pg.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    best = results["backends"]["postgres"].get(f"writers_{max(args.writers)}", {})
    results["postgres_max_writers_meets_target"] = best.get("stores_per_s", 0) >= results["target_stores_per_s"]
    results["no_loss_no_duplicates"] = all(
        v["lost"] == v["duplicated"] == v["unexpected"] == 0 and set(v["put_returned_true_per_run"]) == {args.frames}
        for b in results["backends"].values() for v in b.values())
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Soak: many frames through the real node, uplink, broker and bridge on loopback,
watching resident memory and counting every frame from camera to sample store.

A private mosquitto (LocalBroker), one bridge (BridgeRunner, region-proposal masks),
the segmentation node (RFNet with random weights, onnxruntime on the CPU) and the
synthetic camera publishing small frames as fast as --rate asks. Mining is random with
a budget that never binds, so about --hard-rate of the frames go up. After --warmup
frames the VmRSS of node, bridge and broker is sampled every --sample-s seconds;
growth is the median of five samples taken after the last frame was delivered against
the median of the first five, in percent. At the end every frame the uplink accepted must be in the bridge's store
exactly once (frame uuid is the store's key; the node's diagnostics count what the
uplink accepted, confirmed and dropped; a recorder lists the uuids of the hard frames).

  source scripts/ros_env.sh && .venv/bin/python bench/soak.py --frames 20000   # one JSON line
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "seg_edge_node"))

import torch  # noqa: E402

from seg_harness.local_cloud import BridgeRunner, LocalBroker  # noqa: E402
from cloud_bridge.sample_store import SqliteSampleStore  # noqa: E402
from rfnet.checkpoint import save_checkpoint  # noqa: E402
from rfnet.network import RFNet  # noqa: E402
from seg_harness.processes import Proc, node_command, python_module, ros_env, wait_serving, wait_until  # noqa: E402

NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
DDS_PROFILE = ROOT / "launch" / "fastdds_profile.xml"
DIAGNOSTICS_LOG = ROOT / "tests" / "ros_procs" / "diagnostics_log.py"


def log(msg: str) -> None:
    print(f"[soak] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None   # the process is gone


class Diagnostics:
    """The node's latest /diagnostics values, read as the logger process appends them."""

    def __init__(self, path: Path):
        self.path, self._offset, self.latest = path, 0, {}

    def poll(self) -> dict:
        if self.path.exists():
            with open(self.path) as f:
                f.seek(self._offset)
                for line in f:
                    if not line.endswith("\n"):
                        break   # half written: read it next time
                    self._offset += len(line.encode())
                    self.latest = json.loads(line)
        return self.latest

    def count(self, key: str, default: int = 0) -> int:
        return int(self.latest.get(key, default))

    def accepted(self) -> int:
        """Hard frames the uplink took into its spool."""
        return self.count("uplink_submitted") - self.count("uplink_spool_errors") - self.count("uplink_encode_errors")


def growth(during: list[int], settled: list[int]) -> dict:
    """Growth from just after warm-up to the end, both with nothing queued: the median of
    the first five samples against that of the samples taken after the last frame was
    delivered. A backlog while the run is on (the broker holds what the bridge has not
    taken yet) is not a leak; it shows in rss_kb_max."""
    if len(during) < 5 or not settled:
        return {"samples": len(during), "growth_pct": None}
    first, last = statistics.median(during[:5]), statistics.median(settled)
    return {"samples": len(during) + len(settled), "rss_kb_after_warmup": int(first), "rss_kb_end": int(last),
            "rss_kb_max": max(during + settled), "growth_pct": round(100.0 * (last - first) / first, 2)}


def run(args, tmp: Path) -> dict:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(RFNet(), tmp / "rfnet.pth")
    env = ros_env(tmp / "ros", str(DDS_PROFILE))
    broker = LocalBroker(tmp / "broker").start()
    storage = tmp / "store"
    # The store's replay-buffer cap would evict samples: raised so every stored frame stays countable.
    bridge = BridgeRunner(tmp, "soak", storage, {"broker.port": broker.port, "broker.share_group": "soak",
                                                 "refinement.regions.method": "felzenszwalb",
                                                 "lifelong.buffer.max_samples": 10**7}).start()
    procs: list[Proc] = []
    try:
        bridge.wait_subscribed()
        params = {"model_path": checkpoint, "cache_dir": tmp / "cache", "input_height": args.height,
                  "input_width": args.width, "uplink.host": "127.0.0.1", "uplink.port": broker.port,
                  "uplink.robot_id": "soak", "uplink.spool_dir": tmp / "spool", "threads": args.node_threads,
                  "mining.policy": "random", "mining.random_rate": args.hard_rate, "mining.seed": 1,
                  "mining.budget_per_minute": 600000.0, "mining.budget_burst": 100000}
        node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp)
        procs.append(node)
        wait_serving(node, 300)
        wait_until(lambda: "connected to the broker" in node.log(), 60, "the node's uplink")
        diag_path = tmp / "diagnostics.jsonl"
        procs.append(Proc("diag", [sys.executable, DIAGNOSTICS_LOG, diag_path], env, tmp))
        recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp / "rec",
                                                  "--no-labels"), env, tmp)
        procs.append(recorder)
        wait_until(lambda: "recorder ready" in recorder.log(), 60, "the recorder")
        diag = Diagnostics(diag_path)
        wait_until(lambda: diag.poll(), 60, "the node's diagnostics")
        camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", args.width,
                                              "--height", args.height, "--rate", args.rate, "--count", 0,
                                              "--distinct", 16), env, tmp)
        procs.append(camera)
        pids = {"node": node.popen.pid, "bridge": bridge.process.pid, "broker": broker.process.pid}
        samples: dict[str, list[int]] = {name: [] for name in pids}
        t0 = time.monotonic()
        deadline = t0 + args.max_minutes * 60
        warm = False
        next_sample = 0.0
        while diag.count("frames_segmented") < args.frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {diag.count('frames_segmented')} of {args.frames} frames in "
                                   f"{args.max_minutes} min")
            for p in (node, camera):
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited:\n{p.log()[-3000:]}")
            if not bridge.alive():
                raise RuntimeError(f"the bridge exited:\n{bridge.log()[-3000:]}")
            time.sleep(1.0)
            diag.poll()
            done = diag.count("frames_segmented")
            if not warm and done >= args.warmup:
                warm = True
                log(f"warm after {done} frames ({time.monotonic() - t0:.0f} s); sampling memory")
            if warm and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + args.sample_s
                for name, pid in pids.items():
                    kb = rss_kb(pid)
                    if kb is not None:
                        samples[name].append(kb)
                log(f"{done} frames segmented ({diag.latest.get('rate_hz', '?')} Hz), "
                    f"{diag.count('uplink_submitted')} uploaded, {bridge.stats().get('refined', 0)} stored; "
                    "rss kB " + ", ".join(f"{n} {s[-1]}" for n, s in samples.items() if s))
        seconds = time.monotonic() - t0
        camera.stop()
        # Drain: the uplink has sent every accepted frame and the bridge confirmed each.
        def drained() -> bool:
            diag.poll()
            return (diag.count("uplink_spool_entries", 1) == 0 and diag.count("uplink_confirmed") >= diag.accepted()
                    and bridge.stats().get("queued", 0) == 0)
        wait_until(drained, args.drain_s, "the uplink to deliver every accepted frame", interval=1.0)
        settled: dict[str, list[int]] = {name: [] for name in pids}
        for _ in range(5):
            time.sleep(2.0)   # also lets one more diagnostics message arrive
            for name, pid in pids.items():
                kb = rss_kb(pid)
                if kb is not None:
                    settled[name].append(kb)
        final = diag.poll()
        (tmp / "memory_samples.json").write_text(json.dumps({"during": samples, "settled": settled}))
        recorder.stop()
        results = json.loads((tmp / "rec.json").read_text())["results"]
        hard_seen = {r["frame_uuid"] for r in results if r["source"] == "edge" and r["is_hard"]}
        with SqliteSampleStore(storage / "samples") as store:
            stored = [info.frame_uuid for info in store.list(limit=10**7)]
        bstats = bridge.stats()
        accepted = diag.accepted()
        report = {
            "frames_requested": args.frames, "camera": f"{args.height}x{args.width} at {args.rate} Hz",
            "seconds": round(seconds, 1),
            "frames_segmented": int(final["frames_segmented"]), "hard_frames": int(final["hard_frames"]),
            "frames_uploaded_accepted": accepted, "uplink_published": int(final["uplink_published"]),
            "uplink_republished": int(final["uplink_republished"]), "uplink_confirmed": int(final["uplink_confirmed"]),
            "spool_dropped_oldest": int(final["uplink_spool_dropped_oldest"]),
            "uplink_dropped_queue_full": int(final["uplink_dropped_queue_full"]),
            "frames_stored": len(stored), "stored_distinct": len(set(stored)),
            "bridge": {k: bstats.get(k) for k in ("received", "refined", "duplicate", "rejected", "failed",
                                                  "evicted")},
            "lost_accepted_frames": max(0, accepted - len(set(stored))),
            "hard_frames_seen_by_recorder": len(hard_seen),
            "recorder_hard_not_stored": len(hard_seen - set(stored)),
            "memory": {name: growth(samples[name], settled[name]) for name in pids},
        }
        report["ok"] = (report["lost_accepted_frames"] == 0 and len(stored) == len(set(stored)) == accepted
                        and report["recorder_hard_not_stored"] == 0 and report["spool_dropped_oldest"] == 0
                        and all((m["growth_pct"] or 0) < args.max_growth_pct for m in report["memory"].values()))
        return report
    finally:
        for p in reversed(procs):
            if p.alive():
                p.stop()
        bridge.stop()
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20000, help="frames the node must segment")
    ap.add_argument("--height", type=int, default=64, help="camera and model input height (multiple of 32)")
    ap.add_argument("--width", type=int, default=96, help="camera and model input width (multiple of 32)")
    ap.add_argument("--rate", type=float, default=40.0, help="camera frames per second")
    ap.add_argument("--node-threads", type=int, default=1,
                    help="onnxruntime threads of the node (0 = all cores: on a small machine the node then "
                         "starves the bridge, which in the field runs elsewhere)")
    ap.add_argument("--hard-rate", type=float, default=0.3, help="fraction of frames mined as hard and uploaded")
    ap.add_argument("--warmup", type=int, default=0, help="frames before memory sampling (default 10%%)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    ap.add_argument("--max-growth-pct", type=float, default=5.0, help="growth above this fails the run")
    ap.add_argument("--max-minutes", type=float, default=40.0)
    ap.add_argument("--drain-s", type=float, default=600.0, help="time allowed to deliver the last frames")
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs, store) and print it")
    args = ap.parse_args()
    args.warmup = args.warmup or max(1, args.frames // 10)
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    try:
        report = run(args, tmp)
        if args.keep:
            report["folder"] = str(tmp)
        print(json.dumps(report))
        return 0 if report["ok"] else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

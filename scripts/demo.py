#!/usr/bin/env python3
"""The main job: the edge segmentation node running live on a camera stream.

Starts, as separate processes in a private DDS world: the segmentation node
(launch/edge_params.yaml), a synthetic RGB-D camera at 30 Hz standing in for
the robot's camera, and a recorder that subscribes to the node's outputs.
Prints what came out (frames, rate, latency, diagnostics) and writes logs, a
summary and an overlay image under runs/<timestamp>/ (runs/latest points there).

  scripts/demo.sh [--checkpoint pretrain_model.pth] [--seconds 20] [--backend onnxruntime]

Without --checkpoint the model has random weights: everything runs for real,
but the masks mean nothing. Ctrl-C stops every process it started.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
DDS_PROFILE = ROOT / "launch" / "fastdds_profile.xml"

from rfnet.checkpoint import save_checkpoint  # noqa: E402
from rfnet.engines import BACKENDS  # noqa: E402
from rfnet.network import RFNet  # noqa: E402
from seg_harness.processes import Proc, node_command, python_module, ros_env, wait_serving  # noqa: E402
from seg_eval.run_dirs import new_run_dir  # noqa: E402


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="Ianvs/RFNet .pth checkpoint (default: random weights)")
    ap.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    args = ap.parse_args()

    run = new_run_dir(ROOT / "runs")
    say(f"outputs in {run}")
    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(RFNet(), run / "random_rfnet.pth")
        say("no --checkpoint given: using an RFNet with RANDOM weights (the pipeline is real, the masks are not)")
    env = ros_env(run / "ros_home", str(DDS_PROFILE))
    procs: list[Proc] = []
    try:
        say(f"starting seg_edge_node ({args.backend}, {args.height}x{args.width}); "
            "the first start exports the model to ONNX")
        node = Proc("seg_edge_node", node_command(NODE_EXE, PARAMS_FILE, {
            "model_path": checkpoint.resolve(), "backend": args.backend,
            "input_height": args.height, "input_width": args.width}), env, run)
        procs.append(node)
        wait_serving(node)
        say("node is serving; starting the recorder and a synthetic camera "
            f"({args.width}x{args.height} RGB-D at {args.rate:g} Hz, {args.seconds:g} s)")
        recorder = Proc("recorder", python_module(
            "seg_harness.result_recorder", "--out", run / "edge", "--no-labels",
            "--overlay-topic", "/seg_edge_node/overlay", "--overlay-png", run / "overlay.png"), env, run)
        camera = Proc("camera", python_module(
            "seg_harness.synthetic_camera", "--width", args.width, "--height", args.height,
            "--rate", args.rate, "--count", int(args.rate * args.seconds)), env, run)
        procs += [recorder, camera]
        t0 = time.monotonic()
        while camera.alive():
            time.sleep(1.0)
            say(f"{time.monotonic() - t0:5.1f} s ...")
        time.sleep(1.5)   # the last frames and one more diagnostics message
        recorder.stop()
        summary = json.loads((run / "edge.json").read_text())
        diag = summary.pop("diagnostics")
        headline = {
            "model_version": diag.get("model_version"), "backend": diag.get("backend"),
            "frames_sent": int(args.rate * args.seconds), "frames_segmented": summary["labels_received"],
            "output_fps": round(summary["rate_hz"], 2),
            "latency_ms_p50": round(summary.get("latency_ms_p50", float("nan")), 1),
            "latency_ms_p99": round(summary.get("latency_ms_p99", float("nan")), 1),
            "engine_ms_p50": diag.get("engine_ms_p50"),
            "frames_skipped_stale (keep-latest)": diag.get("frames_skipped_stale"),
        }
        (run / "summary.json").write_text(json.dumps({**headline, "diagnostics": diag}, indent=1))
        say("done:\n" + "\n".join(f"  {k:36s} {v}" for k, v in headline.items()))
        say(f"summary {run / 'summary.json'}, overlay {run / 'overlay.png'}, logs {run}/*.log")
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Refinement benchmark: mask generators' time per 480x640 frame and the refined labels'
mIoU on generated hard frames.

Renders `--frames` dim_underpass frames at 480x640 (its own "bench" split: streets that
no training, val or test split uses) with their ground-truth instances, and refines each
with every mask generator x class evidence (seg_eval.ablation's rows):

- masks: none, felzenszwalb colour regions, depth/normal/colour regions, and the
  "sim-instance masks, SAM stand-in" (ground-truth instances, degraded; never SAM);
- semantics: the robot's model, the cloud's model, both.

The models are the main job's cached ones (runs/cache/base-*.pth and cloud-*.pth, the
newest of each; run scripts/main_job.sh first) or --base / --cloud. Every frame counts
as hard (on this task the robot's mining marks nearly all of them).

  .venv/bin/python bench/refine.py --json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campus_sim.tasks import render  # noqa: E402
from campus_sim.writer import split_seed  # noqa: E402
from cloud_bridge.cloud_semantics import CloudModel, CloudModelConfig  # noqa: E402
from cloud_bridge.depth_regions import DepthRegionGenerator  # noqa: E402
from cloud_bridge.mask_generators import RegionProposalGenerator  # noqa: E402
from cloud_bridge.model_registry import EnginePredictor  # noqa: E402
from rfnet.checkpoint import load_checkpoint, model_version  # noqa: E402
from rfnet.engines import EngineConfig, ModelSpec, load_engine  # noqa: E402
from rfnet.preprocessing import PreprocessConfig  # noqa: E402
from seg_eval.ablation import Evidence, run_ablation  # noqa: E402
from seg_eval.job_config import CloudSideConfig  # noqa: E402
from seg_eval.sam_standin import NAME as STANDIN, SamStandInConfig, SimInstanceMaskGenerator  # noqa: E402
from segwire import HardFrame  # noqa: E402

H, W = 480, 640


def log(msg: str) -> None:
    print(f"[refine] {msg}", file=sys.stderr, flush=True)


def newest(pattern: str) -> Path | None:
    found = sorted((p for p in (ROOT / "runs" / "cache").glob(pattern) if ".partial." not in p.name),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def edge_predictor(path: Path, height: int, width: int, cache: Path) -> EnginePredictor:
    spec = ModelSpec(load_checkpoint(path).num_classes, height, width, True)
    engine = load_engine(EngineConfig(str(path), spec, "onnxruntime", str(cache), device="auto")).engine
    return EnginePredictor(engine, model_version(path), PreprocessConfig.depth_units_per_metre)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--base", type=Path, help="the robot's RFNet checkpoint (default: newest runs/cache/base-*.pth)")
    ap.add_argument("--cloud", type=Path, help="the cloud model (default: newest runs/cache/cloud-*.pth)")
    ap.add_argument("--edge-input", default="128x160", help="the robot model's input HxW")
    side = CloudSideConfig()   # the main job's bridge settings
    ap.add_argument("--cloud-input", default=f"{side.cloud_input_height}x{side.cloud_input_width}",
                    help="the cloud model's input HxW")
    ap.add_argument("--cloud-weight", type=float, default=side.cloud_weight)
    ap.add_argument("--mask-weight", type=float, default=side.mask_weight,
                    help="semantics.mask_weight: 1 = a mask takes one class; below, it blends with each pixel")
    args = ap.parse_args()
    base, cloud = args.base or newest("base-*.pth"), args.cloud or newest("cloud-*.pth")
    if base is None or cloud is None:
        print("refine: no cached base/cloud model under runs/cache: run scripts/main_job.sh first, or give "
              "--base and --cloud", file=sys.stderr)
        return 2
    eh, ew = (int(v) for v in args.edge_input.split("x"))
    ch, cw = (int(v) for v in args.cloud_input.split("x"))
    cache = ROOT / "runs" / "cache" / "bench_engines"
    t0 = time.monotonic()
    frames, truth, instances = [], {}, {}
    for i in range(args.frames):
        f = render("dim_underpass", i * 8, split_seed(1, "bench"), H, W, instances=True)
        stamp = i + 1
        frames.append(HardFrame(robot_id="bench", frame_uuid=str(uuid.UUID(int=i + 1)), stamp_ns=stamp,
                                frame_id="camera", model_version="bench", mining_policy="bench", mining_score=1.0,
                                rgb=f.rgb, depth_m=f.depth_m, edge_labels=np.zeros((H, W), np.uint8)))
        truth[stamp], instances[stamp] = f.labels, f.instances
    log(f"rendered {len(frames)} frames at {W}x{H} in {time.monotonic() - t0:.0f} s")
    edge = edge_predictor(base, eh, ew, cache)
    # The robot's labels: its own model's argmax, as the node publishes them.
    frames = [dataclasses.replace(f, edge_labels=edge.logits(f.rgb, f.depth_m).argmax(0).astype(np.uint8))
              for f in frames]
    edge_labels = {f.stamp_ns: f.edge_labels for f in frames}
    cloud_model = CloudModel(CloudModelConfig(str(cloud), ch, cw, cache_dir=str(cache)))
    standin = SamStandInConfig()
    generators = {"regions": RegionProposalGenerator(), "depth_regions": DepthRegionGenerator(),
                  "sam_standin": SimInstanceMaskGenerator(instances, standin)}
    result = run_ablation(frames, truth, edge_labels, generators, Evidence(edge, cloud_model, args.cloud_weight,
                                                                            args.mask_weight))
    out = {"resolution": f"{H}x{W}", "frames": len(frames), "task": "dim_underpass (bench split)",
           "cloud_input": args.cloud_input, "mask_weight": args.mask_weight,
           "base": str(base), "cloud": str(cloud), "sam_standin": f"{STANDIN}: ground-truth instances, degraded "
           f"{json.dumps(standin.describe())}",
           "mask_ms_per_frame": {}, "refined_miou": {}, "refined_pixel_accuracy": {}}
    for r in result["rows"]:
        out["mask_ms_per_frame"][r["masks"]] = round(1000 * r["mask_seconds_per_frame"], 1)
        key = f"{r['masks']}/{r['semantics']}"
        out["refined_miou"][key] = round(r["hard_miou"], 4)
        out["refined_pixel_accuracy"][key] = round(r["hard_pixel_accuracy"], 4)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

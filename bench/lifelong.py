#!/usr/bin/env python3
"""Lifelong update benchmark: one update cycle on the running robot, per label source.

Runs the main job's pipeline (seg_eval.main_job: data and base model cached under
RUNS/cache) and prints one JSON line: for the update trained on ground-truth labels
(standing in for human annotation) at the top level, and per label source under
`by_label_source` (the bridge's pseudo-labels and ground truth):
  swap_gap_ms       largest gap between published frames across the model swap
  normal_gap_ms     largest gap between frames of one model in the same stream
  update_cycle_s    buffer trigger (training starts) to the new model serving on the robot
  miou_{old,new}_task_{before,after}  edge-only mIoU on the test bags, through the node
  bwt, fwt          Ianvs BWT/FWT of (old task, new task), base model as initial scores
  published         whether the gate let the candidate through (else "after" = before)

  source scripts/ros_env.sh && .venv/bin/python bench/lifelong.py --json [--preset full|smoke]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg_eval.job_config import PRESETS  # noqa: E402
from seg_eval.main_job import run_main_job  # noqa: E402


def figures(report: dict, labels: str) -> dict:
    old, new = report["tasks"]["old"], report["tasks"]["new"]
    update = report["updates"][labels]
    after = report[f"miou_after_update_{labels}"]
    return {
        "label_source": {"pseudo": "bridge pseudo-labels (region refinement)", "gt": "ground_truth"}[labels],
        "published": update["published"], "blocked_because": update["blocked_because"],
        "swap_gap_ms": update.get("swap_gap_ms"), "normal_gap_ms": update.get("normal_gap_ms"),
        "update_cycle_s": update.get("update_cycle_s"), "train_s": update["train_s"],
        "train_frames": update["train_frames"],
        "miou_old_task_before": report["miou_edge"][old], "miou_old_task_after": after[old],
        "miou_new_task_before": report["miou_edge"][new], "miou_new_task_after": after[new],
        "bwt": report["transfer_metrics"][labels]["bwt_ianvs"], "fwt": report["transfer_metrics"][labels]["fwt_ianvs"],
        "old_task_change": report["bwt"][labels],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    args = ap.parse_args()
    with contextlib.redirect_stdout(sys.stderr):   # progress to stderr: stdout is the JSON line
        run, report = run_main_job(PRESETS[args.preset], args.runs)
    by_source = {f["label_source"]: f for f in (figures(report, "pseudo"), figures(report, "gt"))}
    out = {**by_source["ground_truth"], "by_label_source": by_source, "run": str(run)}
    if not args.json:
        print(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job's report: headline figures per task (report.json keys the issue names),
the update decisions, per-class IoU, latency and overlays (report.html)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from rfnet.classes import load_class_list

from .job_config import JobConfig
from .job_data import JobData
from segmetrics import bwt, fwt
from .replay_eval import read_recording
from .report import write_report

OLD, NEW = "old", "new"
# Per-class IoU columns: (which replays, what is scored).
COLUMNS = (("before", "edge"), ("before", "edge + cloud"), ("pseudo", "after update (pseudo-labels)"),
           ("gt", "after update (ground truth)"))


def _transfer(before: dict, after: dict) -> dict:
    """Ianvs BWT/FWT of the sequence (old task, new task); the base model is row 0 and
    the initial scores (segmetrics documents the convention)."""
    b = [before[OLD].edge.miou(), before[NEW].edge.miou()]
    matrix = [b, [after[OLD].edge.miou(), after[NEW].edge.miou()]]
    return {"bwt_ianvs": bwt(matrix, b), "fwt_ianvs": fwt(matrix, b)}


def build_report(cfg: JobConfig, data: JobData, outcome: dict, seconds: float) -> dict:
    res, upd = outcome["results"], outcome["updates"]
    before, walk = res["before"], res["walk"][NEW]
    names = {OLD: cfg.data.old_task, NEW: cfg.data.new_task}

    def per(fn) -> dict:
        return {names[t]: fn(t) for t in (OLD, NEW)}

    summaries = {t: before[t].summary() for t in (OLD, NEW)}
    report = {
        "tasks": {"old": names[OLD], "new": names[NEW]},
        "miou_edge": per(lambda t: before[t].edge.miou()),
        "miou_edge_cloud": per(lambda t: before[t].final.miou()),
        "transfer_ratio": per(lambda t: summaries[t]["transfer_ratio"]),
        "miou_after_update_pseudo": per(lambda t: res["pseudo"][t].edge.miou()),
        "miou_after_update_gt": per(lambda t: res["gt"][t].edge.miou()),
        # BWT on the first task: its mIoU after the update minus before (GEM's BWT for two tasks).
        "bwt": {labels: res[labels][OLD].edge.miou() - before[OLD].edge.miou() for labels in ("pseudo", "gt")},
        "latency_ms_p50": per(lambda t: summaries[t]["latency_ms_p50"]),
        "latency_ms_p99": per(lambda t: summaries[t]["latency_ms_p99"]),
        "bytes_sent": {**per(lambda t: before[t].bytes_sent), "walk": walk.bytes_sent},
        "pixel_accuracy_edge": per(lambda t: before[t].edge.pixel_accuracy()),
        "pixel_accuracy_edge_cloud": per(lambda t: before[t].final.pixel_accuracy()),
        "frames": per(lambda t: before[t].frames_segmented),
        "uploaded": {**per(lambda t: before[t].uploaded), "walk": walk.uploaded},
        "walk": {"miou_edge": walk.edge.miou(), "miou_edge_cloud": walk.final.miou(),
                 "transfer_ratio": walk.summary()["transfer_ratio"], "frames": walk.frames_segmented},
        "transfer_metrics": {labels: _transfer(before, res[labels]) for labels in ("pseudo", "gt")},
        "updates": upd,
        "seconds": seconds,
        "config": dataclasses.asdict(cfg),
        "data": str(data.root),
    }
    new = names[NEW]
    report["goals"] = {
        "edge_cloud_gain_points": 100 * (report["miou_edge_cloud"][new] - report["miou_edge"][new]),
        "update_gain_points_pseudo": 100 * (report["miou_after_update_pseudo"][new] - report["miou_edge"][new]),
        "update_gain_points_gt": 100 * (report["miou_after_update_gt"][new] - report["miou_edge"][new]),
        "bwt_points": {k: 100 * v for k, v in report["bwt"].items()},
        "targets": "edge+cloud >= edge + 5 points at transfer_ratio <= 0.3; after one update >= +10 points; "
                   "BWT >= -2 points",
    }
    return report


def _overlays(run: Path, data: JobData) -> list[tuple[str, np.ndarray]]:
    """One new-task test frame: camera | truth | edge | edge + cloud | after the GT update."""
    lut = load_class_list().palette()
    lut[255] = 255
    before = read_recording(run / "session" / "before_new.mcap")
    stamps = sorted(before["edge"])
    if not stamps:
        return []
    stamp = next((s for s in stamps if s in before["refined"]), stamps[len(stamps) // 2])
    k = stamps.index(stamp)
    rgb_path = data.new_test_index.parent / data.new_test_index.read_text().split("\n")[k].split()[0]
    rgb = cv2.cvtColor(cv2.imread(str(rgb_path)), cv2.COLOR_BGR2RGB)
    panels = [("camera", rgb), ("ground truth", lut[before["truth"][stamp]]), ("edge", lut[before["edge"][stamp]]),
              ("edge + cloud", lut[before["refined"].get(stamp, before["edge"][stamp])])]
    after_path = run / "session" / "after_gt_new.mcap"
    if after_path.exists():
        after = read_recording(after_path)
        later = sorted(after["edge"])
        if len(later) == len(stamps):
            panels.append(("after the update (ground truth)", lut[after["edge"][later[k]]]))
    return panels


def write_job_report(run: Path, cfg: JobConfig, data: JobData, outcome: dict, seconds: float) -> dict:
    report = build_report(cfg, data, outcome, seconds)
    res = outcome["results"]
    names = {OLD: cfg.data.old_task, NEW: cfg.data.new_task}
    ious, latency = {}, {}
    for key, mode in COLUMNS:
        for task in (NEW, OLD):
            r = res[key][task]
            cm = r.final if mode == "edge + cloud" else r.edge
            ious[f"{mode}: {names[task]}"] = cm.iou_per_class()
            if key in ("before", "gt") and mode != "edge + cloud":
                latency[f"{mode}: {names[task]}"] = r.latency_ms
    write_report(run, report, load_class_list().names, ious, latency, _overlays(run, data))
    return report


def headline(report: dict) -> str:
    new, old = report["tasks"]["new"], report["tasks"]["old"]
    rows = [
        (f"mIoU edge only ({new})", report["miou_edge"][new]),
        (f"mIoU edge + cloud ({new})", report["miou_edge_cloud"][new]),
        (f"samples transfer ratio ({new})", report["transfer_ratio"][new]),
        (f"mIoU after update, pseudo-labels ({new})", report["miou_after_update_pseudo"][new]),
        (f"mIoU after update, ground truth ({new})", report["miou_after_update_gt"][new]),
        (f"mIoU edge only ({old})", report["miou_edge"][old]),
        (f"BWT on {old}, pseudo / ground truth", f"{report['bwt']['pseudo']:+.4f} / {report['bwt']['gt']:+.4f}"),
        (f"latency p50 / p99 ms ({new})",
         f"{report['latency_ms_p50'][new]:.1f} / {report['latency_ms_p99'][new]:.1f}"),
        (f"bytes sent ({new} test / walk)", f"{report['bytes_sent'][new]} / {report['bytes_sent']['walk']}"),
    ]
    for labels, u in report["updates"].items():
        if u.get("published"):
            rows.append((f"update ({labels}): swap gap / normal gap ms",
                         f"{u.get('swap_gap_ms', float('nan')):.0f} / {u.get('normal_gap_ms', float('nan')):.0f}"))
        else:
            rows.append((f"update ({labels})", "blocked by the gate: " + "; ".join(u["blocked_because"])))
    return "\n".join(f"  {k:48s} {v:.4f}" if isinstance(v, float) else f"  {k:48s} {v}" for k, v in rows)

"""The main job's report: headline figures per task (report.json keys the issue names),
the update decisions, per-class IoU, latency and overlays (report.html)."""
from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

import numpy as np

from rfnet.classes import load_class_list

from .job_config import JobConfig
from .job_data import JobData
from segmetrics import bwt, fwt
from .ablation import row as ablation_row
from .replay_eval import read_recording
from .report import table_html, write_report

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
        # A busy node drops a camera frame rather than fall behind; each replay is scored on
        # the frames it segmented: [segmented, in the bag].
        "frames_scored": {mode: per(lambda t, m=mode: [res[m][t].frames_segmented, res[m][t].frames_in_bag])
                          for mode in ("before", "pseudo", "gt")},
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
        "targets": "edge+cloud >= edge + 2 points weights-free and >= edge + 5 points with the SAM stand-in, at "
                   "transfer_ratio <= 0.3; after one update from pseudo-labels >= edge + 5 points (published), from "
                   "ground truth >= edge + 10 points; BWT >= -2 points",
    }
    if "ablation" in outcome:
        report["ablation"] = outcome["ablation"]
    if "stages" in outcome:
        report["stage_seconds"] = outcome["stages"]
    if "pseudo_label_quality" in outcome:
        report["pseudo_label_quality"] = outcome["pseudo_label_quality"]
    report["goal_table"] = goal_table(report)
    report["models_saw"] = models_saw(cfg, report)
    return report


def goal_table(report: dict) -> list[dict]:
    """The summary rows: goal, target, measured value, met or not."""
    new = report["tasks"]["new"]
    edge = report["miou_edge"][new]
    pts = lambda v: None if v is None else round(100 * v, 2)   # noqa: E731
    rows = []

    def goal(name, target, measured, met):
        rows.append({"goal": name, "target": target, "measured": measured, "met": met})
    live_gain = pts(report["miou_edge_cloud"][new] - edge)
    goal(f"edge + cloud on {new}, weights-free (live bridge)", ">= +2 points", live_gain, live_gain >= 2)
    # The stand-in's masks with the class evidence the live bridge votes with.
    sam = (ablation_row(report["ablation"], "sam_standin", report["ablation"]["live"]["semantics"])
           if "ablation" in report else None)
    sam_gain = pts(sam["stream_miou"] - edge) if sam else None
    goal(f"edge + cloud on {new}, sim-instance masks, SAM stand-in (ground-truth instances)", ">= +5 points",
         sam_gain, sam_gain is not None and sam_gain >= 5)
    ratio = report["transfer_ratio"][new]
    goal(f"samples transfer ratio ({new})", "<= 0.3", round(ratio, 3), ratio <= 0.3)
    pseudo = report["updates"].get("pseudo", {})
    gain = pts(report["miou_after_update_pseudo"][new] - edge)
    goal("one update from pseudo-labels, published by the gate", ">= +5 points", gain,
         bool(pseudo.get("published")) and gain >= 5)
    gain = pts(report["miou_after_update_gt"][new] - edge)
    goal("one update from ground truth", ">= +10 points", gain, gain >= 10)
    for labels in ("pseudo", "gt"):
        b = pts(report["bwt"][labels])
        goal(f"BWT ({labels} update)", ">= -2 points", b, b >= -2)
    return rows


def models_saw(cfg: JobConfig, report: dict) -> dict:
    """What each model was trained, selected and gated on (the job's leakage statement)."""
    d, u = cfg.data, cfg.update
    replayed = (f"{d.old_task} train frames" if u.rehearsal_pool == "old_task"
                else "frames of the cloud model's training data (above)")
    return {
        "base_model": f"trained on {d.old_train} {d.old_task} train frames (photometric augmentation: "
                      f"{cfg.base.photometric}), selected on {d.old_val} {d.old_task} val frames; no {d.new_task} frame",
        "cloud_model": f"the base model fine-tuned at {cfg.cloud.input_width}x{cfg.cloud.input_height} on the same "
                       f"{d.old_train} {d.old_task} train frames"
                       + (f" plus {cfg.cloud.extra_frames} generated {cfg.cloud.extra_task} frames (its own streets: "
                          f"{d.old_task}'s kind of street after dark, some underpasses)"
                          if cfg.cloud.extra_task and cfg.cloud.extra_frames else "")
                       + f", with photometric augmentation, selected on the same {d.old_val} val frames, run by "
                         f"the bridge at {cfg.bridge.cloud_input_width}x{cfg.bridge.cloud_input_height}; no "
                         f"{d.new_task} frame or label (its data, training size and the bridge's input size were "
                         f"chosen on a development split: {d.new_task} frames of streets of their own, never "
                         "val, test or the walk)",
        "update_pseudo": f"the base model fine-tuned on the walk's uploaded {d.new_task} frames (walk split, "
                         f"streets of their own) with the bridge's pseudo-labels (no ground truth), plus "
                         f"{u.rehearsal_ratio:g} replayed {replayed} per new frame; gated on the {d.old_val} "
                         f"{d.old_task} and {d.new_val} {d.new_task} val frames (its rehearsal pool and epochs "
                         f"were chosen on a development split: {d.new_task} frames of streets of their own)",
        "update_gt": "as the pseudo update, with the walk frames' ground truth standing in for a human annotator",
        "sam_standin": "uses the renderer's ground-truth instances (class-agnostic) of the scored test frames, "
                       "by design; its figures are stand-in figures, never SAM's",
        "test_frames": f"{d.test} frames per task, used for scoring only",
    }


def _overlays(run: Path, data: JobData) -> list[tuple[str, np.ndarray]]:
    """Up to three of the new task's uploaded test frames: camera (as uploaded) / edge /
    refined by the bridge / ground truth; then one frame after the ground-truth update."""
    from .ablation import hard_frames

    lut = load_class_list().palette()
    lut[255] = 255
    before = read_recording(run / "session" / "before_new.mcap")
    stamps = sorted(before["edge"])
    if not stamps:
        return []
    hard = [f for f in hard_frames(run / "session" / "store" / "samples", set(before["refined"]))]
    picks = [hard[i] for i in np.unique(np.linspace(0, len(hard) - 1, min(3, len(hard))).round().astype(int))] \
        if hard else []
    panels = []
    for n, frame in enumerate(picks, 1):
        s = frame.stamp_ns
        panels += [(f"hard frame {n}: camera", frame.rgb), (f"hard frame {n}: edge", lut[before["edge"][s]]),
                   (f"hard frame {n}: refined", lut[before["refined"][s]]),
                   (f"hard frame {n}: ground truth", lut[before["truth"][s]])]
    after_path = run / "session" / "after_gt_new.mcap"
    if picks and after_path.exists():
        after = read_recording(after_path)
        later = sorted(after["edge"])
        if len(later) == len(stamps):
            k = stamps.index(picks[0].stamp_ns)
            panels.append(("hard frame 1: after the update (ground truth)", lut[after["edge"][later[k]]]))
    return panels


def _lead_sections(report: dict) -> list[tuple[str, str]]:
    """Summary of the goals, the ablation and the updates, shown first in report.html."""
    new = report["tasks"]["new"]
    goals = table_html(["goal", "target", "measured (points)", "met"],
                       [(g["goal"], g["target"], g["measured"], "yes" if g["met"] else "NO")
                        for g in report["goal_table"]])
    sections = [("Summary", goals)]
    ab = report.get("ablation")
    if ab:
        edge = report["miou_edge"][new]
        rows = [(r["masks_description"], r["semantics"], r["hard_miou"], r["hard_pixel_accuracy"], r["stream_miou"],
                 r["stream_pixel_accuracy"], round(100 * (r["stream_miou"] - edge), 2),
                 round(1000 * r["mask_seconds_per_frame"]))
                for r in ab["rows"]]
        live = ab.get("live", {})
        note = (f"<p>{ab['hard_frames']} uploaded hard frames of the {html.escape(new)} test bag "
                f"({ab['stream_frames']} frames in the stream), refined again with every mask generator and "
                f"class evidence. The live bridge ran {html.escape(str(live.get('masks')))} with "
                f"{html.escape(str(live.get('semantics')))} semantics; masks vote with mask_weight "
                f"{live.get('mask_weight', 1.0):g} (1 = a mask takes one class; below, it blends with each "
                "pixel's own evidence). The SAM stand-in row uses the renderer's "
                "ground-truth instances (class-agnostic), degraded as documented in seg_eval/sam_standin.py "
                f"({html.escape(json.dumps(ab.get('sam_standin', {})))}); it is not SAM.</p>")
        sections.append((f"Ablation on {new}", note + table_html(
            ["masks", "semantics", "hard frames mIoU", "hard frames pixel acc.", "edge + cloud stream mIoU",
             "stream pixel acc.", "stream gain over edge (points)", "masks ms/frame"], rows)))
    upd_rows = []
    for labels, u in report["updates"].items():
        g = u.get("gate", {})
        upd_rows.append((labels, "published" if u.get("published") else "blocked: " + "; ".join(u["blocked_because"]),
                         u.get("train_frames"), g.get("new_task", {}).get("current"),
                         g.get("new_task", {}).get("candidate"), g.get("old_task", {}).get("current"),
                         g.get("old_task", {}).get("candidate"),
                         report[f"miou_after_update_{labels}"][new], report["bwt"][labels]))
    quality = report.get("pseudo_label_quality")
    qnote = ""
    if quality:
        qnote = (f"<p>Pseudo-labels of the walk's {quality['frames']} uploaded frames: mIoU {quality['miou']:.3f} "
                 f"(the robot's own labels on them: {quality['miou_edge']:.3f}); after class-balanced confidence "
                 f"masking {100 * quality['kept_fraction']:.0f} % of the pixels train, with pixel accuracy "
                 f"{quality['kept_pixel_accuracy']:.3f} (all pixels: {quality['pixel_accuracy']:.3f}).</p>")
    sections.append(("Updates", qnote + table_html(
        ["labels", "gate", "uploaded frames", "gate new-task val: base", "candidate", "gate old-task val: base",
         "candidate", f"test mIoU after ({new})", "BWT"], upd_rows)))
    return sections


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
    write_report(run, report, load_class_list().names, ious, latency, _overlays(run, data),
                 lead=_lead_sections(report))
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

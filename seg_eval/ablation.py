"""Ablation of the cloud's refinement on the hard frames of a replayed test bag.

The bridge stored every hard frame the robot uploaded during the replay (the JPEG RGB,
the depth and the edge labels exactly as they arrived). Each is refined again here with
every mask generator x every source of class evidence, and scored against the bag's
ground truth:

  masks      edge (no masks: per-pixel evidence), regions (felzenszwalb colour segments),
             depth_regions (cloud_bridge.depth_regions), sam_standin ("sim-instance masks,
             SAM stand-in": ground-truth instances, degraded; seg_eval.sam_standin)
  semantics  edge (the robot's model: its logits when the bridge holds its version,
             else its uploaded labels), cloud (the cloud's own model), combined

Two figures per row: the refined hard frames alone, and the edge + cloud stream (every
frame of the bag, with the refined labels for the uploaded frames and the robot's own
elsewhere), which is how the main job's "edge + cloud" figure is made. The row "edge /
edge" is the robot itself; the row the live bridge ran reproduces its figure.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud_bridge.mask_generators import MaskGenerator, NoMasks
from cloud_bridge.refiner import vote
from segmetrics import ConfusionMatrix
from segwire import HardFrame

MASKS = ("edge", "regions", "depth_regions", "sam_standin")
SEMANTICS = ("edge", "cloud", "combined")
MASK_NAMES = {"edge": "none (per-pixel evidence)", "regions": "felzenszwalb colour regions",
              "depth_regions": "depth/normal/colour regions",
              "sam_standin": "sim-instance masks, SAM stand-in (ground-truth instances, degraded)"}


def hard_frames(store_dir: Path, stamps: set[int]) -> list[HardFrame]:
    """The hard frames the bridge stored whose stamps are in `stamps`, as it received them."""
    from cloud_bridge.sample_store import SqliteSampleStore

    out, offset = [], 0
    with SqliteSampleStore(store_dir) as store:
        while page := store.list(limit=1000, offset=offset):
            for info in page:
                if info.stamp_ns in stamps:
                    s = store.get(info.frame_uuid)
                    out.append(HardFrame(robot_id=s.robot_id, frame_uuid=s.frame_uuid, stamp_ns=s.stamp_ns,
                                         frame_id=s.frame_id, model_version=s.edge_model_version,
                                         mining_policy=s.mining_policy, mining_score=s.mining_score, rgb=s.rgb,
                                         depth_m=s.depth_m, edge_labels=s.edge_labels))
            offset += len(page)
    return sorted(out, key=lambda f: f.stamp_ns)


@dataclass
class Evidence:
    edge_predictor: object | None     # logits(rgb, depth_m), the robot's model; None: uploaded labels
    cloud: object | None              # logits(rgb, depth_m), the cloud model
    cloud_weight: float
    mask_weight: float = 1.0          # semantics.mask_weight of the bridge


def run_ablation(frames: list[HardFrame], truth: Mapping[int, np.ndarray], edge_labels: Mapping[int, np.ndarray],
                 generators: Mapping[str, MaskGenerator], evidence: Evidence, num_classes: int = 30) -> dict:
    """Rows of the ablation (see the module doc). `truth` and `edge_labels`: every frame
    of the stream by stamp; `frames`: its hard frames; `generators`: name -> generator
    (names from MASKS; "edge" is added)."""
    generators = {"edge": NoMasks(), **generators}
    semantics = [s for s in SEMANTICS if s == "edge" or evidence.cloud is not None]
    refined: dict[tuple[str, str], dict[int, np.ndarray]] = {(g, s): {} for g in generators for s in semantics}
    seconds = {g: 0.0 for g in generators}
    for frame in frames:
        edge_logits = (evidence.edge_predictor.logits(frame.rgb, frame.depth_m)
                       if evidence.edge_predictor is not None else None)
        cloud_logits = evidence.cloud.logits(frame.rgb, frame.depth_m) if evidence.cloud is not None else None
        for g, generator in generators.items():
            t0 = time.perf_counter()
            masks = generator.masks(frame)
            seconds[g] += time.perf_counter() - t0
            for s in semantics:
                if g == "edge" and s == "edge":
                    labels = frame.edge_labels     # the robot itself
                else:
                    labels = vote(masks, frame.edge_labels, edge_logits if s != "cloud" else None,
                                  cloud_logits if s != "edge" else None, s, evidence.cloud_weight,
                                  evidence.mask_weight)[0]
                refined[g, s][frame.stamp_ns] = labels
    rows = []
    for (g, s), by_stamp in refined.items():
        hard, stream = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
        for stamp, gt in truth.items():
            if stamp in by_stamp:
                hard.update(by_stamp[stamp], gt)
            if stamp in edge_labels:
                stream.update(by_stamp.get(stamp, edge_labels[stamp]), gt)
        rows.append({"masks": g, "masks_description": MASK_NAMES.get(g, g), "semantics": s,
                     "hard_miou": hard.miou(), "hard_pixel_accuracy": hard.pixel_accuracy(),
                     "stream_miou": stream.miou(), "stream_pixel_accuracy": stream.pixel_accuracy(),
                     "mask_seconds_per_frame": seconds[g] / max(len(frames), 1)})
    return {"hard_frames": len(frames), "stream_frames": len(edge_labels), "rows": rows}


def row(ablation: dict, masks: str, semantics: str) -> dict | None:
    return next((r for r in ablation["rows"] if r["masks"] == masks and r["semantics"] == semantics), None)


def instances_by_stamp(index_file: Path, stamps: list[int]) -> dict[int, np.ndarray]:
    """The renderer's instance map of each frame of a bag made from `index_file`, keyed by
    its stamp: frames are replayed in index order, so the k-th stamp is the k-th line."""
    from campus_sim.writer import instance_path, read_instances

    lines = [line.split() for line in Path(index_file).read_text().splitlines() if line.strip()]
    if len(lines) != len(stamps):
        raise ValueError(f"{index_file} has {len(lines)} frames but the replay recorded {len(stamps)}")
    return {stamp: read_instances(instance_path(index_file, line[-1])) for stamp, line in zip(sorted(stamps), lines)}

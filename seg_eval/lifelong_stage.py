"""One lifelong update inside the main job: the hard frames the robot uploaded on its
walk become a training set (with the bridge's pseudo-labels, or with ground truth
standing in for a human annotation service), cloud_bridge.lifelong fine-tunes and
gates a candidate, and a published candidate is pushed to the running robot.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud_bridge.lifelong import GateDecision, LifelongTrainer
from cloud_bridge.lifelong_config import (FineTuneConfig, GateConfig, LabelSourcesConfig, LifelongConfig,
                                          RehearsalConfig, ReplayBufferConfig)
from cloud_bridge.pseudo_labels import PseudoLabelConfig
from cloud_bridge.sample_store import SampleStore, SqliteSampleStore

from .job_config import JobConfig
from .job_data import JobData

LABELS = ("pseudo", "gt")


def training_store(source: SampleStore, uuids: list[str], directory: Path, task: str,
                   truth_by_stamp: dict[int, np.ndarray] | None = None) -> SqliteSampleStore:
    """A sample store holding the uploaded frames `uuids`, tagged with their task. With
    truth_by_stamp, each frame's labels are replaced by the ground truth of its stamp."""
    store = SqliteSampleStore(directory)
    for uuid in uuids:
        sample = source.get(uuid)
        if truth_by_stamp is not None:
            truth = truth_by_stamp.get(sample.stamp_ns)
            if truth is None:
                raise KeyError(f"no ground truth recorded for the uploaded frame {uuid} (stamp {sample.stamp_ns})")
            # Ground truth is certain: the pseudo-labels' confidence does not apply to it.
            sample = dataclasses.replace(sample, labels=truth, label_source="ground_truth", label_confidence=None)
        store.put(dataclasses.replace(sample, tags={**sample.tags, "task": task}))
    return store


def rehearsal_index(cfg: JobConfig, data: JobData, cache: Path, say=print) -> Path:
    """The Ianvs index an update replays frames from (UpdateConfig.rehearsal_pool): the
    base model's training frames, or everything the cloud's model trained on."""
    if cfg.update.rehearsal_pool == "old_task":
        return data.old_train
    from .cloud_model import training_index
    return training_index(cfg, data, cache, say)[0]


def lifelong_config(cfg: JobConfig, data: JobData, rehearsal: Path, output_dir: Path) -> LifelongConfig:
    u, b = cfg.update, cfg.base
    return LifelongConfig(
        output_dir=str(output_dir), min_new_samples=1,
        old_task_index=str(data.old_val), new_task_index=str(data.new_val),
        # Every uploaded frame trains: the gate's new-task data is the generated val split.
        # Region-refined labels count as training labels here: there is no SAM checkpoint
        # in the main job, and the point is to measure what such pseudo-labels buy.
        buffer=ReplayBufferConfig(holdout_every=0, label_sources=LabelSourcesConfig(region=True)),
        rehearsal=RehearsalConfig(index=str(rehearsal), ratio=u.rehearsal_ratio),
        train=FineTuneConfig(epochs=u.epochs, batch_size=u.batch_size, lr=u.lr, input_height=b.input_height,
                             input_width=b.input_width, freeze_bn=u.freeze_bn, augment=True,
                             photometric=u.photometric, seed=b.seed, precision=u.precision,
                             class_weights=u.class_weights),
        gate=GateConfig(min_new_gain=u.min_new_gain, max_old_drop=u.max_old_drop),
        pseudo_labels=PseudoLabelConfig(keep_fraction=u.pseudo_keep_fraction))


@dataclass
class UpdateRun:
    labels: str                   # "pseudo" or "gt"
    decision: GateDecision
    train_frames: int             # uploaded frames it trained on


def train_update(cfg: JobConfig, data: JobData, base: Path, store: SampleStore, labels: str, rehearsal: Path,
                 output_dir: Path) -> UpdateRun:
    """Fine-tune the base model on `store` + frames replayed from the index `rehearsal`
    and gate the candidate (it is not pushed here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.update.threads)
    try:
        trainer = LifelongTrainer(lifelong_config(cfg, data, rehearsal, output_dir), store, base, progress=True)
        decision = trainer.run(f"main job: {labels} labels of the walk's uploaded frames")
    finally:
        torch.set_num_threads(threads)
    return UpdateRun(labels, decision, decision.record["samples"]["new_training"])


def pseudo_label_quality(store: SampleStore, uuids: list[str], truth_by_stamp: dict[int, np.ndarray],
                         keep_fraction: float, num_classes: int = 30) -> dict:
    """How good the bridge's pseudo-labels of the uploaded frames are (scored against the
    frames' ground truth, which training never sees): mIoU and pixel accuracy of all of
    them, of the robot's own labels on the same frames, and of the pixels that survive
    the class-balanced confidence masking."""
    from cloud_bridge.pseudo_labels import class_thresholds, mask_unsure
    from segmetrics import ConfusionMatrix

    samples = [s for s in map(store.get, uuids) if s is not None and s.stamp_ns in truth_by_stamp]
    pseudo, edge, kept = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    with_conf = [(s.labels, s.label_confidence) for s in samples if s.label_confidence is not None]
    thresholds = class_thresholds(with_conf, PseudoLabelConfig(keep_fraction=keep_fraction)) if with_conf else None
    n_kept = n_all = 0
    for s in samples:
        truth = truth_by_stamp[s.stamp_ns]
        # A pixel the refiner left unlabelled (ignore) is not scored.
        pseudo.update(s.labels, np.where(s.labels >= num_classes, 255, truth).astype(np.uint8))
        edge.update(s.edge_labels, np.where(s.edge_labels >= num_classes, 255, truth).astype(np.uint8))
        masked = mask_unsure(s.labels, s.label_confidence, thresholds)
        kept.update(masked, np.where(masked >= num_classes, 255, truth).astype(np.uint8))
        valid = truth != 255
        n_all += int(valid.sum())
        n_kept += int((valid & (masked < num_classes)).sum())
    return {"frames": len(samples), "miou": pseudo.miou(), "pixel_accuracy": pseudo.pixel_accuracy(),
            "miou_edge": edge.miou(), "kept_fraction": n_kept / max(n_all, 1),
            "kept_pixel_accuracy": kept.pixel_accuracy(), "kept_miou": kept.miou()}

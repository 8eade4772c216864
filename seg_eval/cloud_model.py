"""The cloud's own semantic model for the main job: stronger than the robot's, trained
once and cached like the base model.

Stronger how: a cloud can afford to have seen more of the world than the robot. It
starts from the base model's weights and is fine-tuned on the old task's training frames
plus generated frames of more varied conditions (`extra_task`, by default night_campus:
the old task's kind of streets after dark, with street lamps, a noisy camera and some
underpasses; streets of its own), with photometric and sensor-noise augmentation, and
is selected on the old task's val split like the base model. It never sees a frame of
the new task, nor any of its labels; its provenance file says all this and is stored
with every sample the bridge labels with it.

Cached as <cache>/cloud-<key>.pth with <cache>/cloud-<key>.pth.provenance.json; the extra
frames under <cache>/cloud-data-<key>/.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from campus_sim.tasks import get_task
from campus_sim.writer import generate
from cloud_bridge.cloud_semantics import write_provenance
from rfnet.checkpoint import load_checkpoint, model_version
from rfnet.training import TrainConfig, Trainer, open_labelled
from rfnet.training_data import TorchSegmentationDataset
from segdata import PhotometricConfig

from .job_config import JobConfig
from .job_data import JobData

NUM_CLASSES = 30


def cloud_model_path(cfg: JobConfig, cache: Path) -> Path:
    return Path(cache) / f"cloud-{cfg.key('data', 'base', 'cloud')}.pth"


def training_index(cfg: JobConfig, data: JobData, cache: Path, say=print) -> tuple[Path, int]:
    """An index of the old task's training frames plus the extra conditions' frames
    (rendered once, cached); returns it and its frame count."""
    c, d = cfg.cloud, cfg.data
    if not c.extra_task or c.extra_frames == 0:
        return data.old_train, d.old_train
    if c.extra_task == d.new_task:
        raise ValueError(f"the cloud model must not train on the new task {d.new_task}")
    root = Path(cache) / f"cloud-data-{cfg.key('data', 'cloud')}"
    index = root / "train.txt"
    if not (root / "complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        say(f"cloud model: rendering {c.extra_frames} {c.extra_task} frames ({get_task(c.extra_task).description})")
        extra = generate(root, c.extra_task, c.extra_frames, d.seed, d.height, d.width, "train", d.workers,
                         progress=False, stride=c.extra_stride)
        lines = []
        for source in (data.old_train, extra):
            rel = Path(os.path.relpath(source.parent, root))
            lines += [" ".join(str(rel / p) for p in line.split())
                      for line in source.read_text().splitlines() if line.strip()]
        index.write_text("".join(line + "\n" for line in lines))
        (root / "complete").touch()
    return index, d.old_train + c.extra_frames


def provenance(cfg: JobConfig, data: JobData, base: Path, index: Path, best_miou: float | None) -> dict:
    c, d = cfg.cloud, cfg.data
    trained_on = [{"task": d.old_task, "split": "train", "index": str(data.old_train), "frames": d.old_train}]
    if c.extra_task and c.extra_frames:
        trained_on.append({"task": c.extra_task, "split": "train", "frames": c.extra_frames,
                           "conditions": get_task(c.extra_task).description})
    return {
        "model": "RFNet (ResNet-18 RGB-D encoders), the cloud's semantic model",
        "created_by": "seg_eval.cloud_model (main job)",
        "initialised_from": {"base_model": base.name, "version": model_version(base)},
        "trained_on": trained_on,
        "index": str(index),
        "augmentation": {"geometric": "flip, scale-crop",
                         "photometric": dataclasses.asdict(PhotometricConfig())},
        "selected_on": {"task": d.old_task, "split": "val", "frames": d.old_val, "val_miou": best_miou},
        "never_saw": f"any {d.new_task} frame or label",
        "input_size": [c.input_width, c.input_height],
        "epochs": c.epochs, "lr": c.lr,
    }


def ensure_cloud_model(cfg: JobConfig, data: JobData, base: Path, cache: Path, say=print,
                       progress: bool = True) -> Path:
    path = cloud_model_path(cfg, cache)
    if path.exists() and Path(str(path) + ".provenance.json").exists():
        say(f"cloud model: reusing {path}")
        return path
    c = cfg.cloud
    index, frames = training_index(cfg, data, cache, say)
    tc = TrainConfig(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, input_height=c.input_height,
                     input_width=c.input_width, seed=cfg.base.seed, photometric=True,
                     precision=c.precision)
    train = TorchSegmentationDataset(open_labelled(index, NUM_CLASSES), tc.preprocess, augment=True,
                                     seed=tc.seed, augment_cfg=tc.augment_config)
    val = TorchSegmentationDataset(open_labelled(data.old_val, NUM_CLASSES), tc.preprocess)
    say(f"cloud model: fine-tuning the base model on {frames} frames ({cfg.data.old_task}"
        + (f" + {c.extra_task}" if c.extra_task and c.extra_frames else "")
        + f") at {c.input_width}x{c.input_height} with photometric augmentation, {c.epochs} epochs ({c.threads} threads)")
    threads = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        torch.manual_seed(tc.seed)
        partial = path.with_suffix(".partial.pth")
        result = Trainer(load_checkpoint(base).model, tc).fit(train, val, checkpoint=partial, progress=progress)
    finally:
        torch.set_num_threads(threads)
    load_checkpoint(partial)
    partial.replace(path)
    write_provenance(path, provenance(cfg, data, base, index, result.best_miou))
    say(f"cloud model: val mIoU {result.best_miou:.3f} ({cfg.data.old_task}), {path}")
    return path

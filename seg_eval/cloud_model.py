"""The cloud's own semantic model for the main job: stronger than the robot's, trained
once on the old task and cached like the base model.

Stronger how: it runs at the camera's full resolution (the robot's model sees a
quarter of the pixels), and it is trained with photometric and sensor-noise
augmentation (segdata.PhotometricConfig) so it holds up when the light changes. It
starts from the base model's weights (so its extra cost is the fine-tuning at the
higher resolution) and is selected on the old task's val split, like the base model.
It never sees a frame of the new task, nor any of its labels.

Cached as <cache>/cloud-<key>.pth with <cache>/cloud-<key>.pth.provenance.json (what
it was trained on), which the bridge stores with every sample it labels.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cloud_bridge.cloud_semantics import write_provenance
from rfnet.checkpoint import file_sha256, load_checkpoint
from rfnet.training import TrainConfig, Trainer, open_labelled
from segdata import PhotometricConfig, TorchSegmentationDataset

from .job_config import JobConfig
from .job_data import JobData

NUM_CLASSES = 30


def cloud_model_path(cfg: JobConfig, cache: Path) -> Path:
    return Path(cache) / f"cloud-{cfg.key('data', 'base', 'cloud')}.pth"


def provenance(cfg: JobConfig, data: JobData, base: Path, best_miou: float | None) -> dict:
    c, d = cfg.cloud, cfg.data
    return {
        "model": "RFNet (ResNet-18 RGB-D encoders), the cloud's semantic model",
        "created_by": "seg_eval.cloud_model (main job)",
        "initialised_from": {"base_model": base.name, "version": file_sha256(base)[:12]},
        "trained_on": {"task": d.old_task, "split": "train", "index": str(data.old_train), "frames": d.old_train,
                       "conditions": f"{d.old_task} as rendered, with photometric and sensor-noise augmentation"},
        "selected_on": {"task": d.old_task, "split": "val", "frames": d.old_val, "val_miou": best_miou},
        "never_saw": f"any {d.new_task} frame or label",
        "input_size": [c.input_width, c.input_height],
        "epochs": c.epochs, "lr": c.lr,
        "photometric_augmentation": dataclasses.asdict(PhotometricConfig()),
    }


def ensure_cloud_model(cfg: JobConfig, data: JobData, base: Path, cache: Path, say=print,
                       progress: bool = True) -> Path:
    path = cloud_model_path(cfg, cache)
    if path.exists() and Path(str(path) + ".provenance.json").exists():
        say(f"cloud model: reusing {path}")
        return path
    c = cfg.cloud
    tc = TrainConfig(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, input_height=c.input_height,
                     input_width=c.input_width, seed=cfg.base.seed, photometric=True)
    train = TorchSegmentationDataset(open_labelled(data.old_train, NUM_CLASSES), tc.preprocess, augment=True,
                                     seed=tc.seed, augment_cfg=tc.augment_config)
    val = TorchSegmentationDataset(open_labelled(data.old_val, NUM_CLASSES), tc.preprocess)
    say(f"cloud model: fine-tuning the base model at {c.input_width}x{c.input_height} on {len(train)} "
        f"{cfg.data.old_task} frames with photometric augmentation, {c.epochs} epochs ({c.threads} threads)")
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
    write_provenance(path, provenance(cfg, data, base, result.best_miou))
    say(f"cloud model: val mIoU {result.best_miou:.3f} ({cfg.data.old_task}) at {c.input_width}x{c.input_height}, "
        f"{path}")
    return path

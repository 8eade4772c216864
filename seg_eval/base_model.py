"""The main job's base model: RFNet trained on the old task only, cached.

Cached as <cache>/base-<key>.pth (key: a hash of the data and training settings), so
a second run of the main job, or a user who trained once, skips the training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rfnet.checkpoint import load_checkpoint
from rfnet.network import RFNet, RFNetConfig
from rfnet.training import TrainConfig, Trainer, open_labelled
from rfnet.training_data import TorchSegmentationDataset

from .job_config import JobConfig
from .job_data import JobData

NUM_CLASSES = 30


def ensure_base_model(cfg: JobConfig, data: JobData, cache: Path, say=print, progress: bool = True) -> Path:
    path = Path(cache) / f"base-{cfg.key('data', 'base')}.pth"
    if path.exists():
        say(f"base model: reusing {path}")
        return path
    b = cfg.base
    tc = TrainConfig(epochs=b.epochs, batch_size=b.batch_size, lr=b.lr, input_height=b.input_height,
                     input_width=b.input_width, seed=b.seed, photometric=b.photometric,
                     precision=b.precision)
    train = TorchSegmentationDataset(open_labelled(data.old_train, NUM_CLASSES), tc.preprocess, augment=True,
                                     seed=tc.seed, augment_cfg=tc.augment_config)
    val = TorchSegmentationDataset(open_labelled(data.old_val, NUM_CLASSES), tc.preprocess)
    say(f"base model: training RFNet on {len(train)} {cfg.data.old_task} frames, {b.epochs} epochs at "
        f"{b.input_width}x{b.input_height} on the CPU ({b.threads} threads)"
        + (", photometric augmentation" if b.photometric else ""))
    threads = torch.get_num_threads()
    torch.set_num_threads(b.threads)
    try:
        torch.manual_seed(tc.seed)
        partial = path.with_suffix(".partial.pth")
        result = Trainer(RFNet(RFNetConfig(num_classes=NUM_CLASSES)), tc).fit(train, val, checkpoint=partial,
                                                                             progress=progress)
    finally:
        torch.set_num_threads(threads)
    load_checkpoint(partial)   # a complete, loadable checkpoint before it is the cached one
    partial.replace(path)
    say(f"base model: val mIoU {result.best_miou:.3f} ({cfg.data.old_task}), {path}")
    return path

"""The torch wrapper that turns dataset samples into network inputs for training.

Missing depth: RFNet is an RGB-D network, so by default (`require_depth=True`) a
sample without a depth image is an error: silently training on "no depth anywhere"
would teach the depth branch inputs unlike the robot's real frames. With
`require_depth=False` such a sample gets the depth input of a frame whose every pixel
has no return (preprocess_depth of zeros, what the robot sends when its depth camera
sees nothing) and `has_depth=False`.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from segdata import IGNORE_LABEL, AugmentConfig, DatasetError, SegmentationDataset, augment_sample

from .preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb


class TorchSample(NamedTuple):
    rgb: torch.Tensor       # (3, H, W) float32, normalized as on the robot
    depth: torch.Tensor     # (H, W) float32, normalized as on the robot
    labels: torch.Tensor    # (H, W) int64, 255 = ignore
    has_depth: bool


class TorchSegmentationDataset(torch.utils.data.Dataset):
    """Samples at the network input size, normalized by rfnet.preprocessing.

    With `augment`, sample i of epoch e is augmented with a generator seeded by
    (seed, e, i): reproducible, yet different each epoch. Call set_epoch(e) before
    each epoch: DataLoader workers copy the dataset when an epoch's iteration starts,
    so with persistent_workers=True they keep the epoch they started with.
    """

    def __init__(self, dataset: SegmentationDataset, cfg: PreprocessConfig = PreprocessConfig(),
                 augment: bool = False, seed: int = 0, require_depth: bool = True,
                 augment_cfg: AugmentConfig = AugmentConfig()):
        self.dataset, self.cfg = dataset, cfg
        self.augment, self.seed, self.require_depth, self.augment_cfg = augment, seed, require_depth, augment_cfg
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> TorchSample:
        sample = self.dataset[i]
        if sample.depth_m is None and self.require_depth:
            raise DatasetError(f"{self.dataset.name}: sample {sample.name} has no depth image; RFNet is RGB-D "
                               "(use require_depth=False to train with 'no depth' for such samples)")
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            sample = augment_sample(sample, rng, self.augment_cfg)
        h, w = sample.size
        depth_m = sample.depth_m if sample.depth_m is not None else np.zeros((h, w), np.float32)
        labels = sample.labels if sample.labels is not None else np.full((h, w), IGNORE_LABEL, np.uint8)
        if labels.shape != (self.cfg.input_height, self.cfg.input_width):
            # Nearest, as preprocess_depth resizes depth, so labels and depth pick the same pixels.
            labels = cv2.resize(labels, (self.cfg.input_width, self.cfg.input_height),
                                interpolation=cv2.INTER_NEAREST)
        depth, _ = preprocess_depth(depth_m, self.cfg)
        return TorchSample(torch.from_numpy(preprocess_rgb(sample.rgb, self.cfg)[0]),
                           torch.from_numpy(depth[0]),
                           torch.from_numpy(labels.astype(np.int64)),
                           sample.depth_m is not None)

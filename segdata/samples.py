"""One dataset frame in the project's representation, and the error every reader raises.

Every reader converts its on-disk encoding into this, so training, evaluation and the
robot (which feeds metric depth to `rfnet.preprocessing.preprocess_depth`) see the
same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """A dataset on disk is incomplete or malformed; the message names the file or line."""


@dataclass
class Sample:
    rgb: np.ndarray                 # (H, W, 3) uint8, RGB order
    depth_m: np.ndarray | None      # (H, W) float32 metres, 0 = no depth; None = no depth image
    labels: np.ndarray | None       # (H, W) uint8 class ids, 255 = ignore
    name: str

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise DatasetError(f"{self.name}: rgb must be (H,W,3) uint8, got {self.rgb.dtype} {self.rgb.shape}")
        size = self.rgb.shape[:2]
        for what, arr, dtype in (("depth", self.depth_m, np.float32), ("labels", self.labels, np.uint8)):
            if arr is None:
                continue
            if arr.dtype != dtype or arr.ndim != 2:
                raise DatasetError(f"{self.name}: {what} must be (H,W) {np.dtype(dtype)}, got {arr.dtype} {arr.shape}")
            if arr.shape != size:
                raise DatasetError(f"{self.name}: {what} is {_hw(arr.shape)} but rgb is {_hw(size)}: "
                                   "the images of one sample must have the same size")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def _hw(shape) -> str:
    return f"{shape[1]}x{shape[0]} (WxH)"

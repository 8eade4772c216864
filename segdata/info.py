"""Counts, image sizes and the class histogram of a dataset (`python -m segdata info`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .dataset import SegmentationDataset


@dataclass
class DatasetInfo:
    name: str
    count: int = 0
    sizes: Counter = field(default_factory=Counter)        # (height, width) -> samples
    with_depth: int = 0
    valid_depth_pixels: int = 0
    depth_pixels: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))  # id -> pixels

    def lines(self) -> list[str]:
        out = [f"dataset: {self.name}", f"samples: {self.count}"]
        out += [f"size {w}x{h} (WxH): {n}" for (h, w), n in sorted(self.sizes.items())]
        valid = 100.0 * self.valid_depth_pixels / self.depth_pixels if self.depth_pixels else 0.0
        out.append(f"with depth: {self.with_depth} ({valid:.1f}% of their pixels valid)")
        total = int(self.class_pixels.sum())
        out.append(f"label pixels: {total}")
        out += [f"class {c:3d}{' (ignore)' if c == 255 else ''}: {n} ({100.0 * n / total:.2f}%)"
                for c, n in enumerate(self.class_pixels.tolist()) if n]
        return out


def summarize(dataset: SegmentationDataset) -> DatasetInfo:
    info = DatasetInfo(dataset.name)
    for i in range(len(dataset)):
        sample = dataset[i]
        info.count += 1
        info.sizes[sample.size] += 1
        if sample.depth_m is not None:
            info.with_depth += 1
            info.valid_depth_pixels += int(np.count_nonzero(sample.depth_m > 0))
            info.depth_pixels += sample.depth_m.size
        if sample.labels is not None:
            info.class_pixels += np.bincount(sample.labels.ravel(), minlength=256)
    return info

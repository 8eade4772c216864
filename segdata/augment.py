"""Training augmentation: random horizontal flip and random scale-crop.

Only crops, pads and flips, so rgb, depth and labels stay pixel-aligned exactly; the
resize to the network size happens afterwards in preprocessing, as for evaluation and
on the robot (rgb bilinear, depth and labels nearest).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .labels import IGNORE_LABEL
from .samples import Sample


@dataclass(frozen=True)
class AugmentConfig:
    flip_probability: float = 0.5
    # Zoom factor range, as the original RFNet RandomScaleCrop (0.5x to 2x). Zoom s
    # crops a window of 1/s of the image (s > 1) or pads it to 1/s of its size (s < 1);
    # preprocessing then resizes the window to the network input.
    scale_range: tuple[float, float] = (0.5, 2.0)


def augment_sample(sample: Sample, rng: np.random.Generator, cfg: AugmentConfig) -> Sample:
    h, w = sample.size
    # Always the same draws in the same order, so a given generator state always gives
    # the same augmentation.
    scale = rng.uniform(*cfg.scale_range)
    wh, ww = max(1, round(h / scale)), max(1, round(w / scale))
    y0 = int(rng.integers(min(0, h - wh), max(0, h - wh) + 1))
    x0 = int(rng.integers(min(0, w - ww), max(0, w - ww) + 1))
    flip = rng.random() < cfg.flip_probability

    def transform(image: np.ndarray | None, fill) -> np.ndarray | None:
        if image is None:
            return None
        out = _window(image, y0, x0, wh, ww, fill)
        return np.ascontiguousarray(out[:, ::-1]) if flip else out

    # Padding is "no data" in each channel: black, no depth (0), ignore label.
    return Sample(transform(sample.rgb, 0), transform(sample.depth_m, 0), transform(sample.labels, IGNORE_LABEL),
                  sample.name)


def _window(image: np.ndarray, y0: int, x0: int, height: int, width: int, fill) -> np.ndarray:
    """image[y0:y0+height, x0:x0+width], with `fill` where the window leaves the image."""
    out = np.full((height, width) + image.shape[2:], fill, image.dtype)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + height, image.shape[0]), min(x0 + width, image.shape[1])
    out[top - y0:bottom - y0, left - x0:right - x0] = image[top:bottom, left:right]
    return out

"""A side-by-side picture of a frame for eyes: RGB | labels in the class palette | depth."""
from __future__ import annotations

import cv2
import numpy as np
from rfnet.classes import load_class_list

from .tasks import Frame


def side_by_side(frame: Frame, max_depth: float = 20.0) -> np.ndarray:
    """(H, 3W, 3) uint8 RGB; invalid depth is black."""
    palette = load_class_list().palette()
    labels = palette[frame.labels]
    d = np.clip(frame.depth_m / max_depth, 0, 1)
    depth = cv2.applyColorMap((255 - d * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    depth[frame.depth_m <= 0] = 0
    return np.concatenate([frame.rgb, labels, depth], 1)


def save_side_by_side(frame: Frame, path: str) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(side_by_side(frame), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")

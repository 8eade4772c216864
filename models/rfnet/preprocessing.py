"""Camera frame -> normalized network input, identical for every backend.

Normalization is the original RFNet data pipeline's: rgb/255 then ImageNet
mean/std; depth as an 8-bit image /255 then (d - 0.12176) / 0.09752. Metric
depth from a ROS camera is mapped onto that 8-bit scale with
`depth_units_per_metre`, which must match what the model was trained with.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segdata.depth import RFNET_DEPTH_UNITS_PER_METRE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEPTH_MEAN = 0.12176
DEPTH_STD = 0.09752

# rgb_norm = rgb_uint8 * scale + offset, per channel (folds /255, -mean, /std).
_RGB_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_RGB_OFFSET = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


@dataclass(frozen=True)
class PreprocessConfig:
    input_height: int = 480
    input_width: int = 640
    # 8-bit depth units per metre: the default maps 0..10 m onto 0..255.
    depth_units_per_metre: float = RFNET_DEPTH_UNITS_PER_METRE


def resize_rgb(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    if rgb.shape[:2] == (cfg.input_height, cfg.input_width):
        return rgb
    return cv2.resize(rgb, (cfg.input_width, cfg.input_height), interpolation=cv2.INTER_LINEAR)


def normalize_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (1,3,H,W) float32."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    chw *= _RGB_SCALE[:, None, None]
    chw += _RGB_OFFSET[:, None, None]
    return chw[None]


def preprocess_rgb(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H,W,3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return normalize_rgb(resize_rgb(rgb, cfg))


def valid_depth_mask(depth_m: np.ndarray) -> np.ndarray:
    return np.isfinite(depth_m) & (depth_m > 0)


def preprocess_depth(depth_m: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, float]:
    """(H,W) float32 metres -> ((1,H',W') float32, fraction of invalid pixels).

    NaN, inf and non-positive depth mean "no return" and become 0, the value
    the original 8-bit depth images use for missing depth. Nearest-neighbour
    resizing keeps invalid pixels from bleeding into valid ones.
    """
    if depth_m.ndim != 2:
        raise ValueError(f"expected an (H,W) depth image, got shape {depth_m.shape}")
    valid = valid_depth_mask(depth_m)
    invalid_fraction = 1.0 - float(valid.mean()) if depth_m.size else 1.0
    d8 = np.where(valid, depth_m, 0).astype(np.float32) * cfg.depth_units_per_metre
    np.clip(d8, 0.0, 255.0, out=d8)
    if d8.shape != (cfg.input_height, cfg.input_width):
        d8 = cv2.resize(d8, (cfg.input_width, cfg.input_height), interpolation=cv2.INTER_NEAREST)
    d = (d8 * np.float32(1.0 / (255.0 * DEPTH_STD)) - np.float32(DEPTH_MEAN / DEPTH_STD))
    return d[None].astype(np.float32, copy=False), invalid_fraction


def depth_8bit_to_input(depth8: np.ndarray) -> np.ndarray:
    """Dataset depth stored as 8-bit images (original pipeline) -> (1,H,W) float32."""
    d = depth8.astype(np.float32) / 255.0
    return ((d - DEPTH_MEAN) / DEPTH_STD)[None].astype(np.float32)

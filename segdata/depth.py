"""Depth encodings on disk <-> metric depth (float32 metres, 0 = no depth).

Metres are the common currency because the robot feeds metres to
`rfnet.preprocessing.preprocess_depth`; a dataset decoded to metres and preprocessed
the same way gives the network exactly what it sees on the robot.
"""
from __future__ import annotations

import numpy as np

MM16_MAX = np.iinfo(np.uint16).max
# The original RFNet's 8-bit depth scale (0..10 m onto 0..255): "scale8" depth images
# store it, and rfnet.preprocessing maps a camera's metres onto it.
RFNET_DEPTH_UNITS_PER_METRE = 25.5


def mm16_to_metres(mm: np.ndarray) -> np.ndarray:
    return mm.astype(np.float32) * np.float32(1e-3)


def scale8_to_metres(depth8: np.ndarray, depth_units_per_metre: float) -> np.ndarray:
    """The original RFNet 8-bit depth scale: value v is v / depth_units_per_metre metres,
    so preprocess_depth (which multiplies by the same factor) gives back v."""
    return depth8.astype(np.float32) / np.float32(depth_units_per_metre)


def metres_to_mm16(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> 16-bit millimetres, the canonical on-disk depth.

    Invalid depth (0, negative, NaN, inf) becomes 0. Depth beyond 65.535 m saturates
    rather than turning into "no depth": the network's 8-bit scale saturates far
    closer (10 m at 25.5 units/m), so the network input is unchanged. Valid depth
    under 0.5 mm stays 1 mm, so rounding never turns a return into "no depth".
    """
    valid = np.isfinite(depth_m) & (depth_m > 0)
    mm = np.rint(np.where(valid, depth_m, 0).astype(np.float64) * 1000.0)
    mm = np.clip(mm, 1, MM16_MAX)
    return np.where(valid, mm, 0).astype(np.uint16)


def cityscapes_disparity_to_metres(disparity: np.ndarray, baseline_m: float, fx_px: float) -> np.ndarray:
    """Cityscapes 16-bit disparity PNG -> metres.

    The Cityscapes encoding: p = 0 is invalid, otherwise disparity d = (p - 1) / 256
    pixels; depth = baseline * fx / d. p = 1 (d = 0, infinitely far) has no usable
    depth and becomes 0 as well.
    """
    d = (disparity.astype(np.float32) - 1.0) / 256.0
    valid = (disparity > 0) & (d > 0)
    depth = np.zeros(disparity.shape, np.float32)
    depth[valid] = np.float32(baseline_m * fx_px) / d[valid]
    return depth

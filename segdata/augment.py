"""Training augmentation: random horizontal flip and random scale-crop, and optionally
photometric and sensor-noise changes.

The geometric part only crops, pads and flips, so rgb, depth and labels stay
pixel-aligned exactly; the resize to the network size happens afterwards in
preprocessing, as for evaluation and on the robot (rgb bilinear, depth and labels
nearest).

The photometric part (PhotometricConfig) imitates what changes between a sunny and a
dim camera frame without touching the scene: exposure (a darker or brighter image in
linear light), tone curve, white balance (colour casts of sodium or LED lamps), sensor
noise (read and shot noise, stronger in dark frames as a camera raises its gain),
optical and motion blur, and on the depth side range noise and missing returns. A
model trained with it learns features that hold when the light changes and leans on
depth where the colour image says little.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .labels import IGNORE_LABEL
from .samples import Sample


@dataclass(frozen=True)
class PhotometricConfig:
    """A camera model applied to the (linearised) image: less light reaches the sensor,
    read and shot noise are added there, then the camera's gain brings the image back
    towards a target brightness and amplifies the noise with it (as auto-exposure does
    at night)."""
    probability: float = 0.8                        # a frame is changed at all
    # Light reaching the sensor, a factor drawn log-uniformly: 0.05 is a night frame.
    exposure: tuple[float, float] = (0.05, 1.2)
    max_gain: tuple[float, float] = (2.0, 8.0)      # the most the camera amplifies
    target: tuple[float, float] = (0.03, 0.3)       # mean linear brightness it aims for
    gamma: tuple[float, float] = (0.8, 1.25)        # tone curve on the result
    cast: float = 0.3                               # per-channel gain spread (white balance)
    contrast: tuple[float, float] = (0.6, 1.1)
    # Sensor noise before the gain, on [0, 1] linear values: read noise sigma and the
    # shot-noise factor (sigma = shot * sqrt(signal)), each drawn uniformly up to these.
    read_noise: float = 0.008
    shot_noise: float = 0.03
    blur_probability: float = 0.4
    blur_sigma: tuple[float, float] = (0.3, 1.4)    # Gaussian, pixels
    motion_blur_probability: float = 0.25
    motion_blur_px: tuple[int, int] = (3, 9)        # horizontal kernel length
    # Depth: relative range noise sigma, and a fraction of pixels dropped in small holes.
    depth_noise: float = 0.01
    depth_holes: tuple[float, float] = (0.0, 0.04)


@dataclass(frozen=True)
class AugmentConfig:
    flip_probability: float = 0.5
    # Zoom factor range, as the original RFNet RandomScaleCrop (0.5x to 2x). Zoom s
    # crops a window of 1/s of the image (s > 1) or pads it to 1/s of its size (s < 1);
    # preprocessing then resizes the window to the network input.
    scale_range: tuple[float, float] = (0.5, 2.0)
    photometric: PhotometricConfig | None = field(default=None)


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
    out = Sample(transform(sample.rgb, 0), transform(sample.depth_m, 0), transform(sample.labels, IGNORE_LABEL),
                 sample.name)
    if cfg.photometric is not None and rng.random() < cfg.photometric.probability:
        out = photometric(out, rng, cfg.photometric)
    return out


def photometric(sample: Sample, rng: np.random.Generator, cfg: PhotometricConfig) -> Sample:
    """The sample with its colour image (and depth) changed as described in the module doc;
    labels untouched."""
    lo, hi = np.log(cfg.exposure[0]), np.log(cfg.exposure[1])
    exposure = float(np.exp(rng.uniform(lo, hi)))
    max_gain = float(rng.uniform(*cfg.max_gain))
    target = float(rng.uniform(*cfg.target))
    gains = np.exp(rng.uniform(-cfg.cast, cfg.cast, 3)).astype(np.float32)
    gamma = float(rng.uniform(*cfg.gamma))
    contrast = float(rng.uniform(*cfg.contrast))
    read = float(rng.uniform(0, cfg.read_noise))
    shot = float(rng.uniform(0, cfg.shot_noise))
    blur = rng.random() < cfg.blur_probability
    sigma = float(rng.uniform(*cfg.blur_sigma))
    motion = rng.random() < cfg.motion_blur_probability
    length = int(rng.integers(cfg.motion_blur_px[0], cfg.motion_blur_px[1] + 1))
    noise_rng = np.random.default_rng(int(rng.integers(2 ** 31)))

    lin = (sample.rgb.astype(np.float32) / 255.0) ** 2.2
    lin *= exposure * gains
    mean = float(lin.mean())
    lin = (lin - mean) * contrast + mean
    np.clip(lin, 0.0, 1.0, out=lin)
    if blur:
        lin = cv2.GaussianBlur(lin, (0, 0), sigma)
    if motion:
        kernel = np.full((1, length), 1.0 / length, np.float32)
        lin = cv2.filter2D(lin, -1, kernel, borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(read * read + shot * shot * lin)
    lin = lin + std * noise_rng.standard_normal(lin.shape, dtype=np.float32)
    lin *= float(np.clip(target / max(float(lin.mean()), 1e-6), 1.0, max_gain))
    np.clip(lin, 0.0, 1.0, out=lin)
    rgb = (255.0 * lin ** (1.0 / (2.2 * gamma)) + 0.5).astype(np.uint8)

    depth = sample.depth_m
    if depth is not None:
        depth = depth * (1.0 + cfg.depth_noise * noise_rng.standard_normal(depth.shape, dtype=np.float32))
        holes = float(noise_rng.uniform(*cfg.depth_holes))
        if holes > 0:
            # Small blobs rather than single pixels: missing returns come in patches.
            small = noise_rng.random((max(1, depth.shape[0] // 8), max(1, depth.shape[1] // 8))) < holes
            mask = cv2.resize(small.astype(np.uint8), (depth.shape[1], depth.shape[0]),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
            depth = np.where(mask, 0.0, depth)
        depth = depth.astype(np.float32)
    return Sample(rgb, depth, sample.labels, sample.name)


def _window(image: np.ndarray, y0: int, x0: int, height: int, width: int, fill) -> np.ndarray:
    """image[y0:y0+height, x0:x0+width], with `fill` where the window leaves the image."""
    out = np.full((height, width) + image.shape[2:], fill, image.dtype)
    top, left = max(y0, 0), max(x0, 0)
    bottom, right = min(y0 + height, image.shape[0]), min(x0 + width, image.shape[1])
    out[top - y0:bottom - y0, left - x0:right - x0] = image[top:bottom, left:right]
    return out

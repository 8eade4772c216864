"""Camera and depth-sensor models: linear radiance -> 8-bit RGB, true depth -> measured depth.

RGB: auto exposure (capped gain, so dim scenes stay dim), lens glare from lamps
(saturated cores, halos, star streaks, ghosts) and bloom from over-exposed light,
slight optical blur and motion blur, vignetting, partial auto white balance (a
strong light's colour cast survives it), shot and read noise, sRGB gamma.

Depth: z-depth with noise growing with distance squared (as a stereo camera's),
invalid beyond the range limits, in random dropout blobs and at some depth edges.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .camera import Intrinsics, Pose, project
from .scene import Light


@dataclass(frozen=True)
class SensorConfig:
    key: float = 0.16               # auto exposure: target geometric-mean linear signal
    max_gain: float = 8.0           # where auto exposure gives up
    awb: float = 0.3                # share of the scene's colour cast that white balance removes
    wb_jitter: float = 0.03
    read_noise: float = 0.003       # linear signal std
    shot_noise: float = 0.012       # std = shot_noise * sqrt(signal)
    blur: float = 0.6               # Gaussian optics blur, pixels at 640 wide
    motion_blur: float = 1.5        # longest motion streak, pixels at 640 wide
    vignetting: float = 0.2
    bloom: float = 0.04
    glare: float = 0.0              # lens glare from visible lamps (0 = none)


@dataclass(frozen=True)
class DepthConfig:
    max_range: float = 20.0
    min_range: float = 0.2
    noise: tuple[float, float] = (0.002, 0.002)    # std = a + b * z^2 (m)
    holes: float = 1.5              # mean number of dropout blobs per frame
    edge_dropout: float = 0.4       # share of pixels dropped along depth edges


def expose(rad: np.ndarray, depth: np.ndarray, lights: list[Light], pose: Pose, intr: Intrinsics,
           cfg: SensorConfig, rng: np.random.Generator) -> np.ndarray:
    H, W = rad.shape[:2]
    scale = W / 640.0
    lum = rad @ np.float32([0.2126, 0.7152, 0.0722])
    gain = min(cfg.key / float(np.exp(np.mean(np.log(lum + 1e-4)))), cfg.max_gain)
    x = rad * np.float32(gain)
    if cfg.glare > 0 and lights:
        x += _glare(lights, depth, pose, intr, cfg.glare, rng)
    if cfg.bloom > 0:
        x += cfg.bloom * _soft(np.clip(x - 1.0, 0, 50), 3.0 * scale) + cfg.bloom * 0.5 * _soft(np.clip(x - 1.0, 0, 50), 12.0 * scale)
    if cfg.blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), cfg.blur * scale)
    length = rng.uniform(0, cfg.motion_blur) * scale
    if length >= 1.5:
        x = cv2.filter2D(x, -1, _line_kernel(length, rng.uniform(0, np.pi)))
    x *= (1 - cfg.vignetting * _radius2(H, W))[..., None]
    # White balance on the scene, not the sky (which would tint everything else).
    scene = depth > 0
    means = (x[scene] if scene.mean() > 0.2 else x.reshape(-1, 3)).mean(0) + 1e-6
    wb = (means.mean() / means) ** cfg.awb * rng.uniform(1 - cfg.wb_jitter, 1 + cfg.wb_jitter, 3)
    x *= wb.astype(np.float32)
    sigma = np.sqrt(cfg.read_noise ** 2 + cfg.shot_noise ** 2 * np.clip(x, 0, None))
    x += sigma * rng.standard_normal(x.shape, np.float32)
    out = np.clip(x, 0, 1) ** np.float32(1 / 2.2)
    return (out * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=4)
def _radius2(H: int, W: int) -> np.ndarray:
    """Squared distance from the image centre, 1 at the corners."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    return ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)


def _soft(img: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur, done at quarter size (cheap, and wide glows have no detail)."""
    H, W = img.shape[:2]
    small = cv2.resize(img, (max(1, W // 4), max(1, H // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / 4, 0.5))
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)


def _line_kernel(length: float, angle: float) -> np.ndarray:
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    dx, dy = np.cos(angle) * (length - 1) / 2, np.sin(angle) * (length - 1) / 2
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1, cv2.LINE_AA)
    return k / k.sum()


def _glare(lights: list[Light], depth: np.ndarray, pose: Pose, intr: Intrinsics, strength: float,
           rng: np.random.Generator) -> np.ndarray:
    """Lens glare of the lamps the camera sees: a saturated core, a halo, a star of streaks
    and ghosts mirrored through the image centre, drawn at quarter size and blurred."""
    H, W = depth.shape
    q = 4
    canvas = np.zeros((H // q + 1, W // q + 1, 3), np.float32)
    pos = np.array([li.position for li in lights])
    uv, z = project(pos, pose, intr)
    star = rng.uniform(0, np.pi)
    centre = np.array([W / 2, H / 2])
    for li, (u, v), zc in zip(lights, uv, z):
        if not (zc > 0.3 and -20 < u < W + 20 and -20 < v < H + 20):
            continue
        ui, vi = int(np.clip(u, 0, W - 1)), int(np.clip(v, 0, H - 1))
        seen = depth[vi, ui]
        if 0 < seen < zc - 0.5:          # something stands between the lamp and the camera
            continue
        colour = np.clip(li.colour / li.colour.max(), 0.2, 1.0)
        power = strength * float(np.clip(15.0 / zc, 0.4, 3.0))
        r = max(1.0, 6.0 * power * W / 640 / q)
        p = (int(u / q), int(v / q))
        cv2.circle(canvas, p, int(r * 4), tuple(float(c) * 0.25 * power for c in colour), -1, cv2.LINE_AA)
        cv2.circle(canvas, p, int(r), tuple(float(c) * 6 * power for c in colour), -1, cv2.LINE_AA)
        for k in range(3):
            a = star + k * np.pi / 3
            dx, dy = np.cos(a) * r * 10, np.sin(a) * r * 10
            cv2.line(canvas, (int(p[0] - dx), int(p[1] - dy)), (int(p[0] + dx), int(p[1] + dy)),
                     tuple(float(c) * 0.6 * power for c in colour), 1, cv2.LINE_AA)
        for f in rng.uniform(0.3, 1.6, 2):
            g = centre + (centre - np.array([u, v])) * f
            tint = colour * rng.uniform(0.5, 1.0, 3)
            cv2.circle(canvas, (int(g[0] / q), int(g[1] / q)), int(r * rng.uniform(1, 3)),
                       tuple(float(c) * 0.08 * power for c in tint), -1, cv2.LINE_AA)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.2)
    return cv2.resize(canvas, (W, H), interpolation=cv2.INTER_LINEAR)


def measure_depth(depth: np.ndarray, cfg: DepthConfig, rng: np.random.Generator) -> np.ndarray:
    H, W = depth.shape
    z = depth
    valid = (z >= cfg.min_range) & (z <= cfg.max_range)
    a, b = cfg.noise
    zn = z + (a + b * z * z) * rng.standard_normal(z.shape, np.float32)
    holes = np.zeros((H, W), np.uint8)
    for _ in range(rng.poisson(cfg.holes)):
        centre = (int(rng.uniform(0, W)), int(rng.uniform(0, H)))
        axes = (int(rng.uniform(0.01, 0.06) * W) + 1, int(rng.uniform(0.01, 0.05) * W) + 1)
        cv2.ellipse(holes, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    # Stereo matching fails along occluding edges: drop some pixels where depth jumps.
    far = np.where(z > 0, z, 100.0)
    jump = np.zeros((H, W), bool)
    jump[:, 1:] |= np.abs(np.diff(far, axis=1)) > 0.05 * far[:, 1:] + 0.1
    jump[1:, :] |= np.abs(np.diff(far, axis=0)) > 0.05 * far[1:, :] + 0.1
    jump = cv2.dilate(jump.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    drop = holes.astype(bool) | (jump & (rng.random((H, W), np.float32) < cfg.edge_dropout))
    return np.where(valid & ~drop, np.clip(zn, cfg.min_range, cfg.max_range), 0).astype(np.float32)

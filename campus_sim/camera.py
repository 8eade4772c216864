"""Pinhole camera: intrinsics, pose, the per-pixel rays of a view, projection.

Conventions: the world has x along the street, y to the left, z up (metres). The
camera frame is OpenCV's (x right, y down, z forward). A ray's direction is scaled
so that its camera-frame z component is 1, which makes the ray parameter t of a hit
its z-depth (distance along the optical axis), the depth a depth camera reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Camera axes at yaw = pitch = roll = 0, as world vectors (columns): looking along +x.
_LEVEL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def for_size(cls, height: int, width: int) -> Intrinsics:
        """A RealSense-D435-like colour camera (about 55 x 43 degrees), scaled to the size."""
        return cls(fx=615.0 * width / 640, fy=615.0 * height / 480,
                   cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)

    def as_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation; yaw left-positive, pitch nose-up-positive, roll about the view axis (radians)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(-pitch), np.sin(-pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx @ _LEVEL


@dataclass(frozen=True)
class Pose:
    position: np.ndarray      # (3,) camera centre in the world
    rotation: np.ndarray      # (3, 3) camera-to-world; columns are the camera axes

    def matrix(self) -> np.ndarray:
        """4x4 camera-to-world transform."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.position
        return m

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera frame (..., 3)."""
        return (points - self.position) @ self.rotation


@lru_cache(maxsize=8)
def _normalised_grid(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    u = (np.arange(intr.width, dtype=np.float32) - intr.cx) / intr.fx
    v = (np.arange(intr.height, dtype=np.float32) - intr.cy) / intr.fy
    return np.broadcast_to(u, (intr.height, intr.width)), np.broadcast_to(v[:, None], (intr.height, intr.width))


class Rays:
    """World-frame ray directions of every pixel (H, W) and their reciprocals."""

    def __init__(self, intr: Intrinsics, pose: Pose):
        xn, yn = _normalised_grid(intr)
        r = pose.rotation.astype(np.float32)
        self.origin = pose.position.astype(np.float64)
        self.d = [r[i, 0] * xn + r[i, 1] * yn + r[i, 2] for i in range(3)]
        # Reciprocals serve every axis-aligned box: one division per frame instead of per box.
        with np.errstate(divide="ignore"):
            self.inv = [np.float32(1.0) / c for c in self.d]


def screen_rects(lo: np.ndarray, hi: np.ndarray, pose: Pose, intr: Intrinsics,
                 near: float = 0.02) -> np.ndarray:
    """Pixel rectangles (N, 4) = (v0, v1, u0, u1), half-open, that contain the image of each
    world box [lo, hi] (N, 3); empty (v0 == v1) where the box is outside the view.

    Boxes that cross the near plane are clipped against it first, so that a building
    beside the camera still gets the part of the image it covers.
    """
    n = len(lo)
    if n == 0:
        return np.zeros((0, 4), np.int64)
    bits = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], bool)
    corners = np.where(bits[None], hi[:, None, :], lo[:, None, :])            # (N, 8, 3)
    cam = pose.to_camera(corners)
    z = cam[..., 2]
    front = z > near
    rects = np.zeros((n, 4), np.int64)
    all_front = front.all(1)
    if all_front.any():
        c = cam[all_front]
        rects[all_front] = _bounds_to_rect(c[..., 0] / c[..., 2], c[..., 1] / c[..., 2], intr)
    for i in np.nonzero(front.any(1) & ~all_front)[0]:
        pts = [cam[i, k] for k in range(8) if front[i, k]]
        for a in range(8):
            for axis in range(3):
                b = a | (1 << axis)
                if b != a and front[i, a] != front[i, b]:
                    s = (near - z[i, a]) / (z[i, b] - z[i, a])
                    pts.append(cam[i, a] + s * (cam[i, b] - cam[i, a]))
        p = np.array(pts)
        rects[i] = _bounds_to_rect(p[None, :, 0] / p[None, :, 2], p[None, :, 1] / p[None, :, 2], intr)[0]
    return rects


def _bounds_to_rect(xn: np.ndarray, yn: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """Normalised image coordinates (N, K) of a box's outline -> clipped pixel rectangles."""
    def span(a, f, c, size):
        lo = np.floor(a.min(1) * f + c)
        hi = np.floor(a.max(1) * f + c) + 2      # +2: a half-open end plus a pixel of slack
        return np.clip(lo, 0, size).astype(np.int64), np.clip(hi, 0, size).astype(np.int64)
    u0, u1 = span(xn, intr.fx, intr.cx, intr.width)
    v0, v1 = span(yn, intr.fy, intr.cy, intr.height)
    empty = (u0 >= u1) | (v0 >= v1)
    v1 = np.where(empty, v0, v1)
    return np.stack([v0, v1, u0, u1], 1)


def project(points: np.ndarray, pose: Pose, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel coordinates (N, 2) and camera z (N,)."""
    cam = pose.to_camera(points)
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([cam[:, 0] / z * intr.fx + intr.cx, cam[:, 1] / z * intr.fy + intr.cy], 1)
    return uv, z

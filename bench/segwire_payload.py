#!/usr/bin/env python3
"""Size and speed of segwire hard frames on a synthetic 480x640 RGB-D scene.

The scene: a textured wall and floor (multi-scale noise, so JPEG has detail to
spend bytes on), three shaded boxes with sharp edges, camera noise (sigma 2
grey levels), labels with large regions plus a scatter of ignore pixels, and
depth with ~1.5% holes. Depth noise is the knob that decides the size, because
depth is sent exactly to its unit (``depth_unit_mm``, 1 mm by default):

  none    planes as rendered (a filtered or simulated depth image)
  mild    sigma 2 mm at every range
  stereo  sigma 1 mm * z^2 (z in metres): a stereo camera's growth with range

The noisy cases are also encoded with depth_unit_mm 10 and 20: the noise
below a unit rounds away, so the depth PNG compresses. depth_kb is the depth
section alone.

  PYTHONPATH=. .venv/bin/python bench/segwire_payload.py [--json] [--reps 50]
"""
from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segwire import HardFrame, RefinedResult, decode_hard_frame, decode_refined, encode_hard_frame, encode_refined  # noqa: E402

DEPTH_UNITS_MM = (1, 10, 20)  # for the noisy cases; "none" is sent in millimetres only
DEPTH_NOISE = {"none": lambda z: 0 * z, "mild": lambda z: 0.002 + 0 * z, "stereo": lambda z: 0.001 * z * z}


def _texture(rng: np.random.Generator, h: int, w: int, octaves: tuple[tuple[float, float], ...]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for sigma, amplitude in octaves:
        n = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
        out += amplitude * n / n.std()
    return out


def scene(h: int = 480, w: int = 640, depth_noise: str = "mild", seed: int = 0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = 0.45 * h
    wall = np.stack([170 + 30 * y / h, 165 + 20 * y / h, 150 - 10 * x / w], -1)
    wall += _texture(rng, h, w, ((16, 6), (1, 3)))[..., None]
    floor_tex = _texture(rng, h, w, ((32, 20), (8, 12), (2, 8), (0.7, 5)))
    floor = np.stack([110 + 50 * (y - horizon) / h, 100 + 40 * (y - horizon) / h, 80 + 20 * x / w], -1)
    floor += floor_tex[..., None]
    below = y >= horizon
    rgb = np.where(below[..., None], floor, wall)
    labels = below.astype(np.uint8)
    z = np.where(below, np.clip(250 / np.maximum(y - horizon, 1), 0.3, 6.0), 6.0)  # floor from 0.5 m up; wall 6 m
    boxes = [(80, 150, 230, 380, (200, 60, 40), 2, 2.0), (380, 120, 560, 300, (40, 90, 200), 3, 3.5),
             (300, 320, 420, 470, (230, 220, 60), 4, 1.2)]
    for x0, y0, x1, y1, colour, label, dist in boxes:
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        shade = (1 - 0.3 * (x - x0) / (x1 - x0))[..., None]
        face = np.array(colour, np.float32) * shade + 0.5 * _texture(rng, h, w, ((4, 6), (1, 4)))[..., None]
        rgb = np.where(inside[..., None], face, rgb)
        labels[inside] = label
        z = np.where(inside, dist + 0.002 * (x - x0), z)
    labels[(labels == 1) & (floor_tex > 25)] = 255
    rgb = np.clip(rgb + rng.normal(0, 2.0, rgb.shape), 0, 255).astype(np.uint8)
    z = z + rng.standard_normal(z.shape) * DEPTH_NOISE[depth_noise](z)
    holes = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) > 0.56
    return rgb, np.where(holes, np.nan, z).astype(np.float32), labels


def _depth_bytes(data: bytes) -> int:
    """Length of the depth section (id 2), read by the layout in segwire.payload."""
    (meta_len,) = struct.unpack_from("<I", data, 6)
    pos = 10 + meta_len
    count, pos = data[pos], pos + 1
    for _ in range(count):
        section_id, _codec, length = struct.unpack_from("<BBI", data, pos)
        if section_id == 2:
            return length
        pos += 6 + length
    return 0


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # a robot shares its cores with the camera driver and the model

    rows = []
    for noise in DEPTH_NOISE:
        rgb, depth, labels = scene(depth_noise=noise)
        frame = HardFrame("dog-01", str(uuid.uuid4()), time.time_ns(), "camera_color_optical_frame",
                          "rfnet-1", "entropy", 0.71, rgb, depth, labels)
        for unit in DEPTH_UNITS_MM if noise != "none" else (1,):
            for fmt, quality in (("jpeg", 90), ("jpeg", 80), ("png", 0)):
                def encode(fmt=fmt, quality=quality, unit=unit):
                    return encode_hard_frame(frame, fmt, quality or 90, depth_unit_mm=unit)

                data = encode()
                rows.append(dict(
                    depth_noise=noise, depth_unit_mm=unit, rgb=f"{fmt}{quality or ''}",
                    total_kb=round(len(data) / 1000, 1), depth_kb=round(_depth_bytes(data) / 1000, 1),
                    encode_ms=_median_ms(encode, args.reps),
                    decode_ms=_median_ms(lambda: decode_hard_frame(data), args.reps),
                ))
        no_depth = encode_hard_frame(HardFrame(**{**vars(frame), "depth_m": None}), "jpeg", 90)
        rows.append(dict(depth_noise=noise, rgb="jpeg90, no depth", total_kb=round(len(no_depth) / 1000, 1)))
    refined = encode_refined(RefinedResult("dog-01", str(uuid.uuid4()), 1, "cam", "rfnet-1", "sam", labels, "b"))
    rows.append(dict(depth_noise="-", rgb="refined result", total_kb=round(len(refined) / 1000, 1),
                     decode_ms=_median_ms(lambda: decode_refined(refined), args.reps)))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'depth noise':12} {'unit mm':>7} {'payload':18} {'KB':>7} {'depth KB':>8} {'enc ms':>7} {'dec ms':>7}")
    for r in rows:
        print(f"{r['depth_noise']:12} {r.get('depth_unit_mm', ''):>7} {r['rgb']:18} {r['total_kb']:7.1f} "
              f"{r.get('depth_kb', ''):>8} {r.get('encode_ms', ''):>7} {r.get('decode_ms', ''):>7}")


if __name__ == "__main__":
    main()

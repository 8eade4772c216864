"""Timing of the fusion votes on synthetic masks shaped like SAM's (bench/collab.py and its test)."""
from __future__ import annotations

import time

import numpy as np

from cloud_bridge.fusion import MaskSet, logit_vote, majority_vote


def benchmark_masks(h: int, w: int, n_masks: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Masks shaped like automatic mask generator output: ellipses and rectangles with
    heavy-tailed sizes (a few large regions, many small parts) covering about 2x the
    image in total, so masks nest and overlap."""
    yy, xx = np.mgrid[:h, :w]
    areas = rng.pareto(1.2, n_masks) + 0.2
    areas *= 2 * h * w / areas.sum()
    masks = []
    for area in areas:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        aspect = rng.uniform(0.5, 2.0)
        ry, rx = np.sqrt(area / np.pi * aspect), np.sqrt(area / np.pi / aspect)
        if rng.random() < 0.5:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:  # same area as the ellipse: half-sides sqrt(pi)/2 * radii
            mask = (np.abs(yy - cy) <= 0.886 * ry) & (np.abs(xx - cx) <= 0.886 * rx)
        mask[min(int(cy), h - 1), min(int(cx), w - 1)] = True
        masks.append(mask)
    return masks


def vote_benchmark(h: int = 480, w: int = 640, n_masks: int = 100, n_classes: int = 30,
                   repeats: int = 20, seed: int = 0) -> dict:
    """Median and p90 times (ms) of the votes on synthetic masks and random evidence.

    ``ms_p50``/``ms_p90``: ``logit_vote`` on the ``MaskSet`` a mask generator returns,
    building its segment structure included. ``majority_ms_p50``: ``majority_vote``
    likewise. ``from_bool_masks_ms_p50``: converting a list of bool masks to a
    ``MaskSet`` (paid once per frame when callers pass plain arrays).
    """
    rng = np.random.default_rng(seed)
    masks = benchmark_masks(h, w, n_masks, rng)
    logits = rng.standard_normal((n_classes, h, w)).astype(np.float32)
    edge = logits.argmax(axis=0).astype(np.uint8)
    edge[rng.random((h, w)) < 0.05] = 255
    mask_set = MaskSet.from_masks(masks)
    runs = (mask_set.run_mask, mask_set.run_start, mask_set.run_stop)

    def timed(fn) -> np.ndarray:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return np.asarray(times)

    logit_ms = timed(lambda: logit_vote(MaskSet((h, w), *runs), logits))
    majority_ms = timed(lambda: majority_vote(MaskSet((h, w), *runs), edge))
    convert_ms = timed(lambda: MaskSet.from_masks(masks))
    return {
        "h": h, "w": w, "n_masks": n_masks, "n_classes": n_classes, "repeats": repeats,
        "coverage": float(mask_set.areas.sum() / (h * w)),
        "segments": int(len(mask_set._seg_len)),
        "ms_p50": float(np.median(logit_ms)),
        "ms_p90": float(np.percentile(logit_ms, 90)),
        "majority_ms_p50": float(np.median(majority_ms)),
        "from_bool_masks_ms_p50": float(np.median(convert_ms)),
    }

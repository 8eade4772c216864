"""Sim-instance masks, SAM stand-in: class-agnostic masks built from campus_sim's
ground-truth object instances and degraded the way Segment Anything's automatic mask
generator fails. A benchmark device, never the product's.

SAM weights cannot be downloaded here, so no figure in this project shows what SAM
does. What SAM contributes to the refinement is masks that follow objects; this stand-in
gives the benchmark masks of that kind so the rest of the pipeline (the votes, the
cloud's semantics, pseudo-label training) can be measured with object-like masks. It
uses ground-truth *instances* (which pixels belong to one object, not their classes), so
every figure made with it is reported under its own name, "sim-instance masks, SAM
stand-in", and says that it uses ground-truth instances. The bridge never builds it:
seg_eval.ablation and bench/refine.py construct it explicitly, matching each hard frame
to the renderer's instance map of that frame by the frame's identity (its stamp, i.e.
its index in the replayed bag), never by looking at labels.

Degradations (SamStandInConfig; sizes in pixels at 640 px image width, scaled with the
image), applied in this order, each drawn from a generator seeded by (seed, frame key):

  ragged boundaries  every boundary moves by a smooth random displacement field of
                     amplitude `ragged_px` (correlation length `ragged_scale_px`), as SAM's
                     256 x 256 mask decoder output upsampled to the image does;
  merged neighbours  each pair of touching instances is merged with probability
                     `merge_probability` (SAM joins objects with a weak boundary between them);
  split surfaces     an instance larger than `split_area_fraction` of the image is cut
                     into 2..`split_max_pieces` pieces along its longer axis with probability
                     `split_probability` (SAM returns parts of large surfaces: a road's
                     lanes, a facade's floors);
  missed objects     an instance smaller than `small_px` pixels is dropped with probability
                     `miss_small_probability` (SAM's point grid and its IoU/stability filters
                     lose small and thin things: poles, signs, distant people), any other
                     with `miss_probability`. Dropped pixels are uncovered: they keep the
                     evidence's own per-pixel answer.

The defaults are judgement calls from how SAM's automatic mask generator behaves on street
scenes, not fitted to anything; they are reported with every stand-in figure.
"""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from cloud_bridge.fusion import MaskSet
from cloud_bridge.mask_generators import MaskGenerator
from seg_core import ConfigError

NAME = "sim-instance masks, SAM stand-in"


@dataclass(frozen=True)
class SamStandInConfig:
    ragged_px: float = 3.0
    ragged_scale_px: float = 12.0
    merge_probability: float = 0.12
    split_area_fraction: float = 0.08
    split_probability: float = 0.5
    split_max_pieces: int = 3
    small_px: int = 400
    miss_small_probability: float = 0.5
    miss_probability: float = 0.05
    seed: int = 0

    def __post_init__(self):
        for name in ("merge_probability", "split_probability", "miss_small_probability", "miss_probability",
                     "split_area_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SAM stand-in: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.ragged_px < 0 or self.ragged_scale_px <= 0 or self.small_px < 0 or self.split_max_pieces < 2:
            raise ConfigError("SAM stand-in: ragged_px >= 0, ragged_scale_px > 0, small_px >= 0, split_max_pieces >= 2")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def _rng(cfg: SamStandInConfig, key: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32(str(key).encode())])


def ragged(instances: np.ndarray, amplitude: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The instance map sampled through a smooth random displacement field."""
    if amplitude <= 0:
        return instances
    h, w = instances.shape
    field = []
    for _ in range(2):
        noise = rng.standard_normal((h, w)).astype(np.float32)
        smooth = cv2.GaussianBlur(noise, (0, 0), scale)
        smooth *= amplitude / max(float(smooth.std()), 1e-6)
        field.append(smooth)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    # remap works on float32 images; ids below 2**24 are exact in float32.
    return cv2.remap(instances.astype(np.float32), gx + field[0], gy + field[1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.int32)


def touching_pairs(instances: np.ndarray) -> np.ndarray:
    """(P, 2) sorted id pairs of instances that share a horizontal or vertical edge."""
    pairs = []
    for a, b in ((instances[:, :-1], instances[:, 1:]), (instances[:-1, :], instances[1:, :])):
        m = a != b
        pairs.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], 1))
    allp = np.concatenate(pairs)
    return np.unique(allp, axis=0) if len(allp) else allp.reshape(0, 2)


def degrade(instances: np.ndarray, cfg: SamStandInConfig, key: int) -> np.ndarray:
    """A SAM-like region map from a ground-truth instance map: ids >= 0 are masks, -1 is
    uncovered (see the module doc for the steps)."""
    rng = _rng(cfg, key)
    h, w = instances.shape
    px = w / 640.0
    inst = ragged(np.asarray(instances, np.int32), cfg.ragged_px * px, cfg.ragged_scale_px * px, rng)

    # Merged neighbours (union-find over touching pairs).
    n = int(inst.max()) + 1
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    pairs = touching_pairs(inst)
    for (a, b), draw in zip(pairs, rng.random(len(pairs))):
        if draw < cfg.merge_probability:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    inst = roots[inst]

    # Split large surfaces along their longer axis.
    out = inst.copy()
    next_id = n
    ids, area = np.unique(inst, return_counts=True)
    big = ids[area > cfg.split_area_fraction * h * w]
    for i, draw in zip(big, rng.random(len(big))):
        if draw >= cfg.split_probability:
            continue
        ys, xs = np.nonzero(inst == i)
        coord = xs if np.ptp(xs) >= np.ptp(ys) else ys
        pieces = int(rng.integers(2, cfg.split_max_pieces + 1))
        cuts = np.sort(np.quantile(coord, rng.uniform(0.2, 0.8, pieces - 1)))
        part = np.searchsorted(cuts, coord)
        for k in range(1, pieces):
            sel = part == k
            out[ys[sel], xs[sel]] = next_id
            next_id += 1

    # Missed objects.
    ids, area = np.unique(out, return_counts=True)
    small = area < cfg.small_px * px * px
    draws = rng.random(len(ids))
    missed = np.where(small, draws < cfg.miss_small_probability, draws < cfg.miss_probability)
    lut = np.full(int(ids.max()) + 1, -1, np.int64)
    lut[ids[~missed]] = ids[~missed]
    return lut[out]


class SimInstanceMaskGenerator(MaskGenerator):
    """The stand-in as a mask generator for the benchmark: `instances_by_key` maps a
    frame's identity (its stamp) to the renderer's instance map of that frame."""

    def __init__(self, instances_by_key: Mapping[int, np.ndarray], config: SamStandInConfig = SamStandInConfig()):
        self.instances_by_key, self.config = instances_by_key, config
        self.name = "sim_instances_sam_standin"
        self.label = NAME

    def generate(self, rgb: np.ndarray) -> MaskSet:
        raise TypeError(f"{NAME}: masks need the frame's identity; call masks(frame)")

    def masks(self, frame) -> MaskSet:
        instances = self.instances_by_key.get(frame.stamp_ns)
        if instances is None:
            raise KeyError(f"{NAME}: no rendered instance map for the frame stamped {frame.stamp_ns}")
        if instances.shape != frame.rgb.shape[:2]:
            raise ValueError(f"{NAME}: instance map {instances.shape} does not fit the frame {frame.rgb.shape[:2]}")
        return MaskSet.from_label_image(degrade(instances, self.config, frame.stamp_ns))

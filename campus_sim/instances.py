"""Object instances of a rendered view, from the renderer's own z-buffer.

The ray caster knows which primitive every pixel shows, and the material which class.
An object is built from several primitives (a person: legs, torso, arms, head; a car:
body, cabin, wheels; a stair: one block per step), so an instance is:

  * primitives of one class that touch in 3D (their bounding boxes meet, within
    `touch_m`) and are next to each other in the image belong to one object;
  * an instance is one 8-connected image region of one (object, class): a door is its
    own instance inside its building's facade, a ground layout's road, sidewalk patches
    and manholes are each their own, and an object cut in two by a pole is two pieces,
    as an image-based mask generator would see it.

The ground plane and the sky are never joined to anything by contact (the plane's
bounds are infinite); their regions are split by class and image connectivity only.

These are ground-truth, class-agnostic instances: used to build the benchmark's
"sim-instance masks, SAM stand-in" (seg_eval.sam_standin), never by the product.
"""
from __future__ import annotations

import cv2
import numpy as np

from .raycast import GROUND, NO_HIT

TOUCH_M = 0.05   # bounding boxes closer than this count as touching


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def object_of_primitive(prim: np.ndarray, labels: np.ndarray, primitives: list,
                        touch_m: float = TOUCH_M) -> np.ndarray:
    """(H, W) int64 object id per pixel: primitives merged where they touch (see module doc)."""
    h, w = prim.shape
    # Image-adjacent pairs of different primitives with the same class.
    pairs = set()
    for a, b, la, lb in ((prim[:, :-1], prim[:, 1:], labels[:, :-1], labels[:, 1:]),
                         (prim[:-1, :], prim[1:, :], labels[:-1, :], labels[1:, :])):
        m = (a != b) & (la == lb) & (a > GROUND) & (b > GROUND)
        if m.any():
            ab = np.stack([a[m], b[m]], 1).astype(np.int64)
            ab.sort(axis=1)
            pairs.update(map(tuple, np.unique(ab, axis=0).tolist()))
    n = len(primitives)
    parent = np.arange(max(n, 1) + 1)   # index n stands for the sky (NO_HIT)
    for i, j in pairs:
        lo_i, hi_i = primitives[i].bounds()
        lo_j, hi_j = primitives[j].bounds()
        if np.all(lo_i - touch_m <= hi_j) and np.all(lo_j - touch_m <= hi_i):
            ri, rj = _find(parent, i), _find(parent, j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([_find(parent, i) for i in range(len(parent))])
    ids = np.where(prim == NO_HIT, n, prim)
    return roots[ids]


def instance_map(prim: np.ndarray, labels: np.ndarray, primitives: list, touch_m: float = TOUCH_M) -> np.ndarray:
    """(H, W) int32 instance ids, 0..N-1, numbered in raster order of first appearance."""
    obj = object_of_primitive(prim, labels, primitives, touch_m)
    key = obj * 256 + labels.astype(np.int64)
    _, dense = np.unique(key, return_inverse=True)
    dense = dense.reshape(key.shape).astype(np.int32)
    out = np.full(key.shape, -1, np.int32)
    next_id = 0
    # Connected pieces per (object, class): one cv2 pass per key over its bounding box.
    flat = dense.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.flatnonzero(np.r_[True, flat[order][1:] != flat[order][:-1]])
    ends = np.r_[starts[1:], flat.size]
    for s, e in zip(starts, ends):
        pix = order[s:e]
        ys, xs = np.divmod(pix, key.shape[1])
        y0, x0 = ys.min(), xs.min()
        patch = np.zeros((ys.max() - y0 + 1, xs.max() - x0 + 1), np.uint8)
        patch[ys - y0, xs - x0] = 1
        count, comp = cv2.connectedComponents(patch, connectivity=8)
        out[ys, xs] = next_id + comp[ys - y0, xs - x0] - 1
        next_id += count - 1
    # Raster order of first appearance: stable ids independent of primitive numbering.
    _, first, inverse = np.unique(out.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.int32)
    return rank[inverse].reshape(out.shape)

"""Fusion of class-agnostic masks with the edge model's class evidence.

Semantic-Segment-Anything style: every mask takes one class, decided by the edge
evidence inside it, and fills itself with it. Masks are painted largest first so that
smaller (finer) masks overwrite the larger ones they sit in; pixels no mask covers keep
the edge model's answer.

- ``logit_vote``: per-class logits summed over the mask, the largest sum wins
  (KubeEdge-Ianvs). Used when the bridge has the (C, H, W) logits.
- ``majority_vote``: the most frequent edge label in the mask wins (SSA). Used when
  only the edge label map is available.

Masks travel as a ``MaskSet``: each mask stored as runs of consecutive pixels in
row-major order. The runs of all masks cut the flattened image into elementary
intervals ("segments") on which the set of covering masks is constant, so a vote needs
one contiguous ``np.add.reduceat`` over the evidence (one pass, no per-mask dense work)
followed by work proportional to the number of runs. Painting is decided per segment
as well: the owner of a segment is the last mask (in largest-first order) covering it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MaskSet", "logit_vote", "majority_vote", "probability_vote", "blended_vote",
           "majority_vote_confidence"]


class MaskSet:
    """Class-agnostic masks of one image, ordered by area, largest first.

    Build with ``from_masks`` (bool (H, W) arrays) or ``from_label_image`` (a region
    map). Masks of equal area keep their given order, so the later one is painted over
    the earlier. Empty masks are dropped: they cannot vote or paint.
    """

    def __init__(self, shape: tuple[int, int], run_mask: np.ndarray, run_start: np.ndarray,
                 run_stop: np.ndarray):
        """Runs of pixel indices [start, stop) into the row-major flattened image; the
        runs of one mask must not overlap. Prefer the ``from_*`` constructors."""
        self.shape = (int(shape[0]), int(shape[1]))
        n_pixels = self.shape[0] * self.shape[1]
        run_mask = np.asarray(run_mask, dtype=np.int64)
        run_start = np.asarray(run_start, dtype=np.int64)
        run_stop = np.asarray(run_stop, dtype=np.int64)
        keep = run_stop > run_start
        run_mask, run_start, run_stop = run_mask[keep], run_start[keep], run_stop[keep]

        # Renumber masks as 0..N-1, largest area first, stable for equal areas.
        ids, run_mask = np.unique(run_mask, return_inverse=True)
        area = np.bincount(run_mask, weights=run_stop - run_start, minlength=len(ids))
        order = np.argsort(-area, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        run_mask = rank[run_mask]
        by_mask = np.lexsort((run_start, run_mask))
        self.run_mask = run_mask[by_mask]
        self.run_start = run_start[by_mask]
        self.run_stop = run_stop[by_mask]
        self.areas = area[order].astype(np.int64)

        # Elementary intervals: segment s is pixels [bounds[s], bounds[s+1]).
        bounds = np.unique(np.concatenate(([0, n_pixels], self.run_start, self.run_stop)))
        self._seg_start = bounds[:-1]
        self._seg_len = np.diff(bounds)
        self._run_lo = np.searchsorted(bounds, self.run_start)
        self._run_hi = np.searchsorted(bounds, self.run_stop)
        self._first_run = np.searchsorted(self.run_mask, np.arange(len(self.areas)))

        # Owner = the highest-numbered (smallest, latest painted) mask covering a segment.
        n_segs = self._run_hi - self._run_lo
        seg_of_entry = (np.repeat(self._run_lo - np.cumsum(n_segs) + n_segs, n_segs)
                        + np.arange(int(n_segs.sum())))
        self._owner = np.full(len(self._seg_len), -1, dtype=np.int64)
        np.maximum.at(self._owner, seg_of_entry, np.repeat(self.run_mask, n_segs))

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray],
                   shape: tuple[int, int] | None = None) -> MaskSet:
        """From bool (H, W) arrays. ``shape`` is needed for an empty sequence and is
        checked against every mask otherwise."""
        masks = list(masks)
        if shape is None:
            if not masks:
                raise ValueError("an empty mask list needs an explicit shape")
            shape = np.shape(masks[0])
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"mask shape must be (H, W), got {shape}")
        if not masks:
            return cls(shape, *(np.zeros(0, np.int64) for _ in range(3)))
        run_mask, run_start, run_stop = [], [], []
        for i, mask in enumerate(masks):
            mask = np.asarray(mask)
            if mask.shape != shape:
                raise ValueError(f"mask {i} has shape {mask.shape}, expected {shape} (H, W)")
            if mask.dtype != np.bool_:
                raise ValueError(f"mask {i} has dtype {mask.dtype}, expected bool")
            start, stop = _true_runs(np.ascontiguousarray(mask).reshape(-1))
            run_mask.append(np.full(len(start), i))
            run_start.append(start)
            run_stop.append(stop)
        return cls(shape, np.concatenate(run_mask), np.concatenate(run_start),
                   np.concatenate(run_stop))

    @classmethod
    def from_label_image(cls, regions: np.ndarray, min_area: int = 1) -> MaskSet:
        """One mask per region id of an integer (H, W) region map; regions smaller than
        ``min_area`` pixels, and negative ids, are left uncovered."""
        regions = np.asarray(regions)
        if regions.ndim != 2 or not np.issubdtype(regions.dtype, np.integer):
            raise ValueError(f"region map must be an integer (H, W) array, got "
                             f"{regions.dtype} {regions.shape}")
        flat = np.ascontiguousarray(regions).reshape(-1)
        if flat.size == 0:
            return cls(regions.shape, *(np.zeros(0, np.int64) for _ in range(3)))
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        start = np.concatenate(([0], change))
        stop = np.concatenate((change, [flat.size]))
        ids, run_region = np.unique(flat[start], return_inverse=True)
        area = np.bincount(run_region, weights=stop - start)
        keep = (area[run_region] >= min_area) & (ids[run_region] >= 0)
        return cls(regions.shape, run_region[keep], start[keep], stop[keep])

    def __len__(self) -> int:
        return len(self.areas)

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` (0 = largest) as a bool (H, W) array."""
        if not 0 <= i < len(self):
            raise IndexError(f"mask index {i} out of range for {len(self)} masks")
        flat = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        lo, hi = self._first_run[i], (self._first_run[i + 1] if i + 1 < len(self)
                                      else len(self.run_mask))
        for start, stop in zip(self.run_start[lo:hi], self.run_stop[lo:hi]):
            flat[start:stop] = True
        return flat.reshape(self.shape)

    def __iter__(self):
        return (self.mask(i) for i in range(len(self)))

    def covered(self) -> np.ndarray:
        """Bool (H, W): pixels at least one mask covers."""
        return np.repeat(self._owner >= 0, self._seg_len).reshape(self.shape)

    # -- vote machinery ------------------------------------------------------------

    def _mask_totals(self, seg_values: np.ndarray) -> np.ndarray:
        """(K, n_segments) per-segment sums -> (N, K) per-mask sums."""
        k = seg_values.shape[0]
        acc = np.float64 if np.issubdtype(seg_values.dtype, np.floating) else np.int64
        # Prefix sums over segments turn each run into one difference.
        prefix = np.zeros((k, seg_values.shape[1] + 1), dtype=acc)
        np.cumsum(seg_values, axis=1, dtype=acc, out=prefix[:, 1:])
        run_totals = prefix[:, self._run_hi] - prefix[:, self._run_lo]
        return np.add.reduceat(run_totals, self._first_run, axis=1).T

    def _paint(self, mask_labels: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write each covered pixel's owner label into the flat ``out``."""
        covered = self._owner >= 0
        pixels = np.repeat(covered, self._seg_len)
        out[pixels] = np.repeat(mask_labels[self._owner[covered]], self._seg_len[covered])
        return out.reshape(self.shape)


def logit_vote(masks: MaskSet | Sequence[np.ndarray], logits: np.ndarray) -> np.ndarray:
    """Labels (H, W) uint8: each mask takes the class with the largest logit sum over
    its pixels (ties: smaller class id); uncovered pixels keep the per-pixel argmax.

    ``logits``: (C, H, W) float array (a CPU torch tensor works too), 1 <= C <= 256.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3 or not 1 <= logits.shape[0] <= 256:
        raise ValueError(f"logits must be (C, H, W) with 1 <= C <= 256, got {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating) or logits.dtype.itemsize < 4:
        logits = logits.astype(np.float32)
    masks = _as_mask_set(masks, logits.shape[1:])
    flat = np.ascontiguousarray(logits).reshape(logits.shape[0], -1)
    out = np.empty(flat.shape[1], dtype=np.uint8)
    if len(masks):
        seg_sums = np.add.reduceat(flat, masks._seg_start, axis=1)
        if not np.isfinite(seg_sums).all():  # NaN/inf anywhere in a mask shows up here
            raise ValueError("logits contain NaN or inf")
        winners = masks._mask_totals(seg_sums).argmax(axis=1).astype(np.uint8)
        masks._paint(winners, out)
    uncovered = np.flatnonzero(~masks.covered().reshape(-1))
    out[uncovered] = _pixel_argmax(flat, uncovered)
    return out.reshape(masks.shape)


def _as_probabilities(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or not 1 <= probs.shape[0] <= 256:
        raise ValueError(f"probabilities must be (C, H, W) with 1 <= C <= 256, got {probs.shape}")
    return probs


def probability_vote(masks: MaskSet | Sequence[np.ndarray], probs: np.ndarray,
                     scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-pixel confidence (both (H, W) uint8) from class probabilities
    ``probs`` (C, H, W) that sum to one per pixel: each mask takes the class with the
    largest probability mass over its pixels; uncovered pixels keep the per-pixel
    argmax. With ``scores`` (e.g. logits, (C, H, W)) the winners and the uncovered
    pixels' labels are ``logit_vote(masks, scores)``'s and only the confidence comes
    from ``probs``.

    Confidence (255 = certain) of a pixel is the geometric mean of the winner's share of
    the mask's mass (how clearly the mask voted) and the pixel's own probability of the
    class it was painted (low where a mask runs over a boundary the evidence disagrees
    with); an uncovered pixel's is its own top probability. Pseudo-label training masks
    pixels by it (cloud_bridge.pseudo_labels).
    """
    probs = _as_probabilities(probs)
    masks = _as_mask_set(masks, probs.shape[1:])
    flat = np.ascontiguousarray(probs).reshape(probs.shape[0], -1)
    n = flat.shape[1]
    labels = np.empty(n, dtype=np.uint8)
    share = np.ones(n, dtype=np.float32)
    uncovered = np.flatnonzero(~masks.covered().reshape(-1))
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != probs.shape:
            raise ValueError(f"scores are {scores.shape} but the probabilities {probs.shape}")
        score_flat = np.ascontiguousarray(scores).reshape(scores.shape[0], -1)
    if len(masks):
        seg_sums = np.add.reduceat(flat, masks._seg_start, axis=1)
        if not np.isfinite(seg_sums).all():
            raise ValueError("probabilities contain NaN or inf")
        totals = masks._mask_totals(seg_sums)
        if scores is None:
            winners = totals.argmax(axis=1)
            masks._paint(winners.astype(np.uint8), labels)
        else:
            score_sums = np.add.reduceat(score_flat, masks._seg_start, axis=1)
            if not np.isfinite(score_sums).all():
                raise ValueError("scores contain NaN or inf")
            winners = masks._mask_totals(score_sums).argmax(axis=1)
            masks._paint(winners.astype(np.uint8), labels)
        mass = totals.sum(axis=1)
        win_share = (totals[np.arange(len(winners)), winners] / np.maximum(mass, 1e-12)).astype(np.float32)
        masks._paint(win_share, share)
    labels[uncovered] = _pixel_argmax(flat if scores is None else score_flat, uncovered)
    pixel_p = flat[labels.astype(np.intp), np.arange(n)]
    conf = np.sqrt(np.clip(share * pixel_p, 0.0, 1.0))
    conf[uncovered] = np.clip(pixel_p[uncovered], 0.0, 1.0)
    return labels.reshape(masks.shape), (conf * 255.0 + 0.5).astype(np.uint8).reshape(masks.shape)


def blended_vote(masks: MaskSet | Sequence[np.ndarray], probs: np.ndarray,
                 mask_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-pixel confidence (both (H, W) uint8) from class probabilities
    ``probs`` (C, H, W): each covered pixel takes the argmax of ``mask_weight`` x the mean
    probabilities of the mask that paints it + (1 - ``mask_weight``) x its own.

    At 1 this is ``probability_vote``'s painting. Below 1 a mask pulls its pixels towards
    one class without overruling a pixel whose own evidence is clearly for another: a
    mask that merged two objects, or ran over a boundary, no longer erases the smaller
    one. Confidence (255 = certain) is the winning class's blended probability;
    uncovered pixels keep their own argmax and top probability.
    """
    if not 0.0 <= mask_weight <= 1.0:
        raise ValueError(f"mask_weight must be in [0, 1], got {mask_weight}")
    probs = _as_probabilities(probs)
    masks = _as_mask_set(masks, probs.shape[1:])
    blended = probs.reshape(probs.shape[0], -1).copy()   # painted in place below
    if len(masks):
        seg_sums = np.add.reduceat(blended, masks._seg_start, axis=1)
        if not np.isfinite(seg_sums).all():
            raise ValueError("probabilities contain NaN or inf")
        means = (masks._mask_totals(seg_sums) / masks.areas[:, None]).astype(np.float32)   # (masks, C)
        owner = np.repeat(masks._owner, masks._seg_len)
        covered = np.flatnonzero(owner >= 0)
        blended[:, covered] = (mask_weight * means[owner[covered]].T
                               + (1.0 - mask_weight) * blended[:, covered])
    labels = blended.argmax(axis=0).astype(np.uint8)
    conf = np.clip(blended.max(axis=0), 0.0, 1.0)
    return labels.reshape(masks.shape), (conf * 255.0 + 0.5).astype(np.uint8).reshape(masks.shape)


def majority_vote_confidence(masks: MaskSet | Sequence[np.ndarray], edge_labels: np.ndarray,
                             ignore_label: int | None = 255) -> tuple[np.ndarray, np.ndarray]:
    """``majority_vote`` and a per-pixel confidence: the winner's share of the painting
    mask's votes (255 = unanimous); pixels no mask covers, or whose mask had no vote,
    get 0 (nothing beyond the robot's own label says they are right)."""
    return _majority(masks, edge_labels, ignore_label, with_confidence=True)


def majority_vote(masks: MaskSet | Sequence[np.ndarray], edge_labels: np.ndarray,
                  ignore_label: int | None = 255) -> np.ndarray:
    """Labels (H, W) uint8: each mask takes its most frequent edge label (ties: smaller
    class id). ``ignore_label`` pixels do not vote; a mask with no voting pixel paints
    ``ignore_label`` (its pixels keep it). Uncovered pixels keep the edge label."""
    return _majority(masks, edge_labels, ignore_label, with_confidence=False)


def _majority(masks, edge_labels, ignore_label, with_confidence: bool):
    edge_labels = np.asarray(edge_labels)
    if edge_labels.ndim != 2:
        raise ValueError(f"edge labels must be (H, W), got shape {edge_labels.shape}")
    if edge_labels.dtype != np.uint8:
        if (not np.issubdtype(edge_labels.dtype, np.integer)
                or (edge_labels.size and not 0 <= edge_labels.min() <= edge_labels.max() <= 255)):
            raise ValueError(f"edge labels must be uint8 class ids, got {edge_labels.dtype}")
        edge_labels = edge_labels.astype(np.uint8)
    if ignore_label is not None and not 0 <= ignore_label <= 255:
        raise ValueError(f"ignore_label must be in 0..255 or None, got {ignore_label}")
    masks = _as_mask_set(masks, edge_labels.shape)
    flat = np.ascontiguousarray(edge_labels).reshape(-1)
    out = flat.copy()
    conf = np.zeros(flat.size, np.float32)

    def done():
        labels = out.reshape(masks.shape)
        if not with_confidence:
            return labels
        return labels, (conf * 255.0 + 0.5).astype(np.uint8).reshape(masks.shape)

    if not len(masks):
        return done()

    # Histogram over the classes present only (a few dozen columns, not 256).
    present = np.flatnonzero(np.bincount(flat, minlength=256))
    if ignore_label is not None:
        present = present[present != ignore_label]
    column = np.full(256, len(present), dtype=np.int64)  # extra column: does not vote
    column[present] = np.arange(len(present))
    k = len(present) + 1
    n_segs = len(masks._seg_len)
    key = column[flat]  # (class column, segment) pairs, class-major like the logits
    key *= n_segs
    key += np.repeat(np.arange(n_segs), masks._seg_len)
    seg_hist = np.bincount(key, minlength=k * n_segs).reshape(k, n_segs)
    counts = masks._mask_totals(seg_hist)[:, :-1]
    voted = counts.sum(axis=1) > 0
    winners = np.full(len(masks), 255 if ignore_label is None else ignore_label, np.uint8)
    if len(present):
        best = counts[voted].argmax(axis=1)
        winners[voted] = present[best]
        if with_confidence:
            share = np.zeros(len(masks), np.float32)
            share[voted] = counts[voted][np.arange(len(best)), best] / counts[voted].sum(axis=1)
            masks._paint(share, conf)
    masks._paint(winners, out)
    return done()


def _as_mask_set(masks: MaskSet | Sequence[np.ndarray], shape: tuple[int, int]) -> MaskSet:
    shape = tuple(int(s) for s in shape)
    if isinstance(masks, MaskSet):
        if masks.shape != shape:
            raise ValueError(f"masks are {masks.shape} (H, W) but the evidence is {shape}")
        return masks
    return MaskSet.from_masks(masks, shape)


def _true_runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of the runs of True in a 1-D bool array."""
    as_int = flat.view(np.int8)
    edges = np.flatnonzero(as_int[1:] != as_int[:-1]) + 1
    if flat.size and flat[0]:
        edges = np.concatenate(([0], edges))
    if flat.size and flat[-1]:
        edges = np.concatenate((edges, [flat.size]))
    return edges[0::2], edges[1::2]


def _pixel_argmax(flat: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Class argmax (uint8, first maximum wins like np.argmax) of the given pixels of
    (C, P) logits.

    np.argmax along axis 0 of the full (C, P) array walks each pixel's C values with a
    P-sized stride (about 40 ms for 30 x 480 x 640). A few pixels are gathered into
    contiguous (pixels, C) rows instead; for many, the column maximum is one vectorised
    pass, and marking where each class reaches it, from the last class down, leaves the
    smallest winning class.
    """
    if len(pixels) < flat.shape[1] // 4:
        rows = flat.T[pixels]
        if not np.isfinite(rows).all():
            raise ValueError("logits contain NaN or inf")
        return rows.argmax(axis=1).astype(np.uint8)
    best = flat.max(axis=0)
    if not np.isfinite(best).all():
        raise ValueError("logits contain NaN or inf")
    arg = np.zeros(flat.shape[1], dtype=np.uint8)
    hit = np.empty(flat.shape[1], dtype=bool)
    for c in range(flat.shape[0] - 1, -1, -1):
        np.equal(flat[c], best, out=hit)
        np.copyto(arg, np.uint8(c), where=hit)
    return arg[pixels]

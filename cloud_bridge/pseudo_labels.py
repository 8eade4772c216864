"""Pseudo-labels that survive their own noise: class-balanced confidence thresholds.

The bridge's refined labels carry a per-pixel confidence (Sample.label_confidence, from
the vote). Training on every pixel would teach the model the vote's mistakes as well as
its successes; training only on pixels above one global threshold would keep the
classes the model is already sure of (road, sky) and drop the hard, rare ones the update
is for. So, in the spirit of class-balanced self-training (CBST, Zou et al., ECCV 2018),
each class gets its own threshold: the confidence above which the `keep_fraction` most
confident of the pixels labelled with that class lie, over all new pseudo-labelled
frames of the run, capped at `max_threshold` (a class the vote is sure about keeps all
its sure pixels) and never below `min_confidence`. Pixels below their class's
threshold read as ignore for the loss; labels without a confidence (human, ground
truth) are used whole.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from seg_core import ConfigError

IGNORE = 255


@dataclass(frozen=True)
class PseudoLabelConfig:
    enabled: bool = True
    keep_fraction: float = 0.6      # per class, the most confident part of its pixels that trains
    min_confidence: float = 0.2     # never train on a pixel less sure than this (0..1)
    max_threshold: float = 0.9      # no class's threshold is above this (0..1)

    def __post_init__(self):
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ConfigError(f"pseudo_labels.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        for name in ("min_confidence", "max_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"pseudo_labels.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_confidence > self.max_threshold:
            raise ConfigError("pseudo_labels.min_confidence must not exceed max_threshold")


def class_thresholds(frames: Iterable[tuple[np.ndarray, np.ndarray]], cfg: PseudoLabelConfig) -> np.ndarray:
    """(256,) uint8 confidence threshold per label id from (labels, confidence) uint8
    pairs; ids that never occur get min_confidence."""
    hist = np.zeros((256, 256), np.int64)   # [label, confidence] pixel counts
    for labels, confidence in frames:
        if labels.shape != confidence.shape:
            raise ValueError(f"labels {labels.shape} and confidence {confidence.shape} differ in size")
        key = labels.astype(np.int64).ravel() * 256 + confidence.ravel()
        hist += np.bincount(key, minlength=256 * 256).reshape(256, 256)
    lo = int(round(cfg.min_confidence * 255))
    hi = int(round(cfg.max_threshold * 255))
    out = np.full(256, lo, np.uint8)
    totals = hist.sum(axis=1)
    for c in np.flatnonzero(totals):
        # Highest confidence t such that at least keep_fraction of the class is >= t.
        at_least = np.cumsum(hist[c, ::-1])[::-1]          # pixels with confidence >= t
        ok = np.flatnonzero(at_least >= cfg.keep_fraction * totals[c])
        out[c] = np.clip(ok.max() if len(ok) else 0, lo, hi)
    out[IGNORE] = 0
    return out


def mask_unsure(labels: np.ndarray, confidence: np.ndarray | None, thresholds: np.ndarray | None) -> np.ndarray:
    """Labels with the pixels below their class's threshold set to ignore (a copy)."""
    if confidence is None or thresholds is None:
        return labels
    if confidence.shape != labels.shape:
        raise ValueError(f"confidence {confidence.shape} does not fit labels {labels.shape}")
    return np.where(confidence < thresholds[labels], IGNORE, labels).astype(np.uint8)


def kept_fraction(frames: Iterable[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray) -> float:
    """Fraction of labelled (non-ignore) pixels that stay after masking."""
    kept = total = 0
    for labels, confidence in frames:
        valid = labels != IGNORE
        total += int(valid.sum())
        kept += int((valid & (confidence >= thresholds[labels])).sum())
    return kept / total if total else 0.0

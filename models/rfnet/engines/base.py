"""The one interface every inference backend implements.

Engines take already-preprocessed tensors (see `rfnet.preprocessing`) and return
the same `SegmentationOutput`, whatever runs underneath, so the node, the
benchmarks and the cross-backend tests treat them alike.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..model_io import ModelSpec

__all__ = ["EngineError", "ModelSpec", "SegmentationEngine", "SegmentationOutput", "labels_from_int"]


class EngineError(RuntimeError):
    """An engine could not be built or could not run; the message says what to do."""


@dataclass
class SegmentationOutput:
    labels: np.ndarray                 # (H, W) uint8 class ids at model input size
    confidence: np.ndarray             # (H, W) float32, top-1 softmax probability
    logits: np.ndarray | None = None   # (C, H, W) float32, only when asked for
    logits_lowres: np.ndarray | None = None  # (C, H/4, W/4) float32, the network's own grid


class SegmentationEngine(abc.ABC):
    """A loaded model ready to run on one frame at a time (batch 1)."""

    backend: str = "abstract"
    precision: str = "fp32"           # what it computes in (a name in its backend's precisions)

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @abc.abstractmethod
    def infer(self, rgb: np.ndarray, depth: np.ndarray | None = None,
              return_logits: bool = False) -> SegmentationOutput:
        """rgb: (1,3,H,W) float32 normalized; depth: (1,H,W) float32 normalized.

        `depth` must be given exactly when `spec.use_depth` is true.
        """

    def close(self) -> None:
        """Release native resources. Engines are also usable as context managers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_inputs(self, rgb: np.ndarray, depth: np.ndarray | None) -> None:
        h, w = self.spec.input_hw
        if rgb.shape != (1, 3, h, w) or rgb.dtype != np.float32:
            raise EngineError(f"{self.backend}: rgb must be float32 (1,3,{h},{w}), got "
                              f"{rgb.dtype} {rgb.shape}; run rfnet.preprocessing first")
        if self.spec.use_depth:
            if depth is None:
                raise EngineError(f"{self.backend}: this engine was built for RGB-D; pass depth "
                                  "or build an RGB-only engine (use_depth=False)")
            if depth.shape != (1, h, w) or depth.dtype != np.float32:
                raise EngineError(f"{self.backend}: depth must be float32 (1,{h},{w}), got "
                                  f"{depth.dtype} {depth.shape}")
        elif depth is not None:
            raise EngineError(f"{self.backend}: this engine is RGB-only; do not pass depth")


def labels_from_int(labels: np.ndarray) -> np.ndarray:
    """Model graphs emit int32/int64 class ids; messages carry mono8."""
    return labels.reshape(labels.shape[-2:]).astype(np.uint8, copy=False)

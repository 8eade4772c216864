"""What a compiled RFNet takes and gives: shapes and tensor names (no torch needed).

Shared by the ONNX export and every engine, so the graph and its consumers
cannot disagree on a name.
"""
from __future__ import annotations

from dataclasses import dataclass

INPUT_RGB = "rgb"                 # (1, 3, H, W) float32, normalized
INPUT_DEPTH = "depth"             # (1, H, W) float32, normalized; RGB-D graphs only
OUTPUT_LABELS = "labels"          # (1, H, W) int32 class ids
OUTPUT_CONFIDENCE = "confidence"  # (1, H, W) float32 top-1 softmax probability
OUTPUT_LOGITS = "logits"          # (1, C, H, W) float32


@dataclass(frozen=True)
class ModelSpec:
    """What a compiled model expects and produces. Shapes are static per engine."""

    num_classes: int = 30
    input_height: int = 480
    input_width: int = 640
    use_depth: bool = True

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.input_height, self.input_width)

    @property
    def mode(self) -> str:
        return "rgbd" if self.use_depth else "rgb"

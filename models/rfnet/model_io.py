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
# (1, C, H/4, W/4) float32: logits at the network's own output resolution, before the
# final upsampling. Cheap to fetch every frame; mining rules use it.
OUTPUT_LOGITS_LOWRES = "logits_lowres"
# Bumped whenever the exported graph's inputs/outputs change, so cached exports are redone.
GRAPH_VERSION = 2


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

    @property
    def lowres_hw(self) -> tuple[int, int]:
        """The decoder's output size: the stem's two stride-2 steps, rounding up."""
        return (-(-(-(-self.input_height // 2)) // 2), -(-(-(-self.input_width // 2)) // 2))

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        h, w = self.input_hw
        return {OUTPUT_LABELS: (1, h, w), OUTPUT_CONFIDENCE: (1, h, w),
                OUTPUT_LOGITS: (1, self.num_classes, h, w),
                OUTPUT_LOGITS_LOWRES: (1, self.num_classes, *self.lowres_hw)}

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        h, w = self.input_hw
        shapes = {INPUT_RGB: (1, 3, h, w)}
        if self.use_depth:
            shapes[INPUT_DEPTH] = (1, h, w)
        return shapes

"""PyTorch backend: the reference the other backends are checked against."""
from __future__ import annotations

import numpy as np
import torch

from ..network import RFNet
from ..onnx_export import RFNetDeploy
from .base import ModelSpec, SegmentationEngine, SegmentationOutput, labels_from_int


class TorchEngine(SegmentationEngine):
    backend = "torch"

    def __init__(self, model: RFNet, spec: ModelSpec, device: str = "cpu"):
        super().__init__(spec)
        self.device = torch.device(device)
        self._deploy = RFNetDeploy(model).eval().to(self.device)

    @torch.inference_mode()
    def infer(self, rgb: np.ndarray, depth: np.ndarray | None = None,
              return_logits: bool = False) -> SegmentationOutput:
        self._check_inputs(rgb, depth)
        t_depth = None if depth is None else torch.from_numpy(depth).to(self.device)
        labels, conf, logits, lowres = self._deploy(torch.from_numpy(rgb).to(self.device), t_depth)
        return SegmentationOutput(
            labels=labels_from_int(labels.cpu().numpy()),
            confidence=conf[0].cpu().numpy(),
            logits=logits[0].cpu().numpy() if return_logits else None,
            logits_lowres=lowres[0].cpu().numpy())

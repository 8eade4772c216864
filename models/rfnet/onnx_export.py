"""Export RFNet to ONNX with labels and confidence computed inside the graph.

Argmax and softmax-max run in the graph so that no backend pays a NumPy pass
over (C,H,W) logits per frame; logits stay available as a third output.
Shapes are static (batch 1, one input size): TensorRT engines are built per
shape anyway, and static shapes let every backend fold constants.

CLI: rfnet-export-onnx CHECKPOINT OUT.onnx [--height 480 --width 640 --rgb-only]
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model_io import (INPUT_DEPTH, INPUT_RGB, OUTPUT_CONFIDENCE, OUTPUT_LABELS, OUTPUT_LOGITS,
                       OUTPUT_LOGITS_LOWRES, ModelSpec)
from .network import RFNet, upsample

log = logging.getLogger(__name__)

OPSET = 17


class RFNetDeploy(nn.Module):
    """RFNet plus its postprocessing: labels int32 (1,H,W), confidence (1,H,W), logits, logits_lowres."""

    def __init__(self, model: RFNet):
        super().__init__()
        self.model = model

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None):
        # Same computation as RFNet.forward, split to expose the pre-upsampling logits.
        lowres = self.model.logits(self.model.backbone(rgb, depth))
        logits = upsample(lowres, rgb.shape[-2:])
        top, labels = torch.max(logits, dim=1)
        # max softmax = 1 / sum(exp(l - max l)): no full softmax tensor kept around.
        confidence = torch.reciprocal(torch.exp(logits - top.unsqueeze(1)).sum(dim=1))
        return labels.to(torch.int32), confidence, logits, lowres


def export_onnx(model: RFNet, spec: ModelSpec, path: str | Path) -> Path:
    """Write `model` (eval mode, CPU) for `spec` to `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deploy = RFNetDeploy(model).eval().cpu()
    h, w = spec.input_hw
    args = [torch.zeros(1, 3, h, w)]
    names = [INPUT_RGB]
    if spec.use_depth:
        args.append(torch.zeros(1, h, w))
        names.append(INPUT_DEPTH)
    tmp = path.with_suffix(".onnx.tmp")
    # Static shapes are intended, so the tracer's "treated as a constant" warnings are noise.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(deploy, tuple(args), str(tmp), input_names=names,
                          output_names=[OUTPUT_LABELS, OUTPUT_CONFIDENCE, OUTPUT_LOGITS, OUTPUT_LOGITS_LOWRES],
                          opset_version=OPSET, dynamo=False)
    tmp.replace(path)  # atomic: a half-written file never looks like a model
    log.info("exported %s (%s, %dx%d) to %s", type(model).__name__, spec.mode, h, w, path)
    return path


def main(argv=None) -> int:
    from .checkpoint import CheckpointError, load_checkpoint

    ap = argparse.ArgumentParser(description="Export an Ianvs/RFNet checkpoint to ONNX (labels, confidence, "
                                             "logits outputs; static input size).")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--rgb-only", action="store_true", help="export the RGB-only branch (no depth input)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        print(f"rfnet-export-onnx: {e}", file=sys.stderr)
        return 2
    spec = ModelSpec(ckpt.num_classes, args.height, args.width, use_depth=not args.rgb_only)
    export_onnx(ckpt.model, spec, args.out)
    _check_against_torch(ckpt.model, spec, args.out)
    return 0


def _check_against_torch(model: RFNet, spec: ModelSpec, path: Path) -> None:
    """Refuse to leave behind an ONNX file that does not compute what torch computes."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    h, w = spec.input_hw
    feeds = {INPUT_RGB: rng.standard_normal((1, 3, h, w), dtype=np.float32)}
    if spec.use_depth:
        feeds[INPUT_DEPTH] = rng.standard_normal((1, h, w), dtype=np.float32)
    labels = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUTPUT_LABELS], feeds)[0]
    with torch.no_grad():
        ref = model(*(torch.from_numpy(v) for v in feeds.values())).argmax(1).numpy()
    agreement = float((labels == ref).mean())
    if agreement < 0.999:
        path.unlink()
        raise SystemExit(f"rfnet-export-onnx: ONNX Runtime and torch agree on only {agreement:.4%} of pixels; "
                         "export removed")
    log.info("ONNX Runtime and torch agree on %.4f%% of pixels", 100 * agreement)


if __name__ == "__main__":
    sys.exit(main())

"""The inference backends by name: what each accepts and how it is built.

One table, `engine_registry` (name -> Backend), like segment-anything's
`sam_model_registry`: the node's and the bridge's configuration check backend and
precision names against it, and `factory.load_engine` builds through it, so adding a
backend or a precision is one entry here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import EngineError, ModelSpec, SegmentationEngine
from .calibration import Calibration

AUTO = "auto"              # a backend's first precision
CALIBRATED = ("int8",)     # precisions that need calibration frames


@dataclass(frozen=True)
class BuildRequest:
    """What a builder gets: the model file in the backend's input format, and the settings."""

    model_path: Path           # .onnx for ONNX backends, the .pth checkpoint for torch
    spec: ModelSpec
    precision: str             # resolved: never "auto"
    cache_dir: Path
    device: str
    threads: int
    calibration: Calibration | None   # set exactly for calibrated precisions


@dataclass(frozen=True)
class Backend:
    name: str
    precisions: tuple[str, ...]       # the first is the default ("auto")
    takes_onnx: bool                  # False: runs the checkpoint itself
    build: Callable[[BuildRequest], SegmentationEngine]
    about: str

    def resolve(self, precision: str) -> str:
        """`precision` checked against this backend, "auto" resolved; ValueError says what to use."""
        if precision == AUTO:
            return self.precisions[0]
        if precision not in self.precisions:
            raise ValueError(f"precision={precision!r} is not available with backend {self.name}: "
                             f"use {', '.join((AUTO,) + self.precisions)}")
        return precision


def _build_onnxruntime(req: BuildRequest) -> SegmentationEngine:
    from .onnxruntime_engine import OnnxRuntimeEngine
    path = req.model_path
    if req.precision == "int8":
        from .onnxruntime_int8 import quantize_int8
        path = quantize_int8(path, req.calibration, req.cache_dir / "onnxruntime_int8")
    engine = OnnxRuntimeEngine(path, req.spec, req.device, req.threads)
    engine.precision = req.precision
    return engine


def _build_tensorrt(req: BuildRequest) -> SegmentationEngine:
    from .tensorrt_engine import TensorRTEngine
    device = 0 if req.device in (AUTO, "cuda") else _cuda_ordinal(req.device)
    return TensorRTEngine(req.model_path, req.spec, precision=req.precision, cache_dir=req.cache_dir / "tensorrt",
                          calibration_inputs=None if req.calibration is None else req.calibration.batches,
                          device=device)


def _build_torch(req: BuildRequest) -> SegmentationEngine:
    from ..checkpoint import load_checkpoint
    from .torch_engine import TorchEngine
    device = "cpu" if req.device == AUTO else req.device
    return TorchEngine(load_checkpoint(req.model_path, req.spec.num_classes).model, req.spec, device)


def _cuda_ordinal(device: str) -> int:
    try:
        return int(device.removeprefix("cuda:"))
    except ValueError:
        raise EngineError(f"tensorrt device {device!r}: use auto, cuda or cuda:N") from None


engine_registry: dict[str, Backend] = {
    "onnxruntime": Backend("onnxruntime", ("fp32", "int8"), True, _build_onnxruntime,
                           "CPU everywhere, CUDA with onnxruntime-gpu; int8: static quantization"),
    "tensorrt": Backend("tensorrt", ("fp16", "fp32", "int8"), True, _build_tensorrt,
                        "NVIDIA GPU (tensorrt + pycuda)"),
    "torch": Backend("torch", ("fp32",), False, _build_torch, "the checkpoint in PyTorch (reference)"),
}
BACKENDS = tuple(engine_registry)


def backend_named(name: str) -> Backend:
    """The registered backend; ValueError naming the accepted ones otherwise."""
    try:
        return engine_registry[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}") from None

"""Build the configured engine from a checkpoint or ONNX file.

A user gives one model file: an Ianvs/RFNet `.pth` checkpoint or an exported
`.onnx`. The ONNX export of a checkpoint is cached by checkpoint hash, depth
mode and input size, so a robot exports once; TensorRT caches its engines on
top of that (see engine_cache).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CheckpointError, file_sha256, load_checkpoint, require_checkpoint_file
from ..model_io import GRAPH_VERSION
from ..onnx_export import export_onnx
from .base import EngineError, ModelSpec, SegmentationEngine

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt", "torch")


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    spec: ModelSpec = field(default_factory=ModelSpec)
    backend: str = "onnxruntime"
    cache_dir: str = str(Path.home() / ".cache" / "seg_edge")
    device: str = "auto"          # onnxruntime: auto|cpu|cuda; torch: cpu|cuda:N
    threads: int = 0              # onnxruntime intra-op threads (0 = library default)
    precision: str = "fp16"       # tensorrt: fp32|fp16|int8


@dataclass
class LoadedEngine:
    engine: SegmentationEngine
    version: str                  # model version id (file hash prefix)
    onnx_path: Path | None


def onnx_for(model_path: Path, spec: ModelSpec, cache_dir: Path) -> tuple[Path, str]:
    """Return (ONNX file, version) for a .onnx or .pth model file."""
    if model_path.suffix == ".onnx":
        if not model_path.is_file():
            raise EngineError(f"ONNX model not found: {model_path}")
        return model_path, file_sha256(model_path)[:12]
    digest = file_sha256(require_checkpoint_file(model_path))
    cached = cache_dir / "onnx" / (f"{digest[:16]}-{spec.mode}-{spec.input_height}x{spec.input_width}"
                                   f"-c{spec.num_classes}-g{GRAPH_VERSION}.onnx")
    if cached.is_file():
        log.info("using cached ONNX export %s", cached)
    else:
        log.info("exporting %s to ONNX (once per checkpoint, input size and depth mode)", model_path)
        export_onnx(load_checkpoint(model_path, spec.num_classes).model, spec, cached)
    return cached, digest[:12]


def load_engine(cfg: EngineConfig) -> LoadedEngine:
    """Raises CheckpointError or EngineError with a message that says what to do."""
    if cfg.backend not in BACKENDS:
        raise EngineError(f"unknown backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    model_path = Path(cfg.model_path).expanduser()
    if not str(cfg.model_path):
        raise CheckpointError("no model given: set model_path to an Ianvs/RFNet .pth checkpoint or an .onnx file")
    cache_dir = Path(cfg.cache_dir).expanduser()

    if cfg.backend == "torch":
        if model_path.suffix == ".onnx":
            raise EngineError("the torch backend needs the .pth checkpoint, not an ONNX file")
        from .torch_engine import TorchEngine
        device = "cpu" if cfg.device == "auto" else cfg.device
        ckpt = load_checkpoint(model_path, cfg.spec.num_classes)
        return LoadedEngine(TorchEngine(ckpt.model, cfg.spec, device), ckpt.version, None)

    onnx_path, version = onnx_for(model_path, cfg.spec, cache_dir)
    if cfg.backend == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine
        return LoadedEngine(OnnxRuntimeEngine(onnx_path, cfg.spec, cfg.device, cfg.threads),
                            version, onnx_path)
    from .tensorrt_engine import TensorRTEngine
    engine = TensorRTEngine(onnx_path, cfg.spec, precision=cfg.precision,
                            cache_dir=cache_dir / "tensorrt")
    return LoadedEngine(engine, version, onnx_path)

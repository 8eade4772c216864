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
from .calibration import Calibration, load_calibration
from .registry import AUTO, CALIBRATED, BuildRequest, backend_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    spec: ModelSpec = field(default_factory=ModelSpec)
    backend: str = "onnxruntime"  # a name in engine_registry
    cache_dir: str = str(Path.home() / ".cache" / "seg_edge")
    device: str = "auto"          # onnxruntime: auto|cpu|cuda; torch: cpu|cuda:N; tensorrt: auto|cuda:N
    threads: int = 0              # onnxruntime intra-op threads (0 = library default)
    precision: str = AUTO         # one of the backend's precisions (engine_registry); auto: its first
    # int8 only: the frames to calibrate on. None: the set last stored for this input spec
    # under cache_dir (calibration.save_calibration); an EngineError if there is none.
    calibration: Calibration | None = None


@dataclass
class LoadedEngine:
    engine: SegmentationEngine
    version: str                  # model version id (file hash prefix)
    onnx_path: Path | None
    precision: str = "fp32"       # the precision it runs at (never "auto")


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
    try:
        backend = backend_named(cfg.backend)
        precision = backend.resolve(cfg.precision)
    except ValueError as e:
        raise EngineError(str(e)) from None
    model_path = Path(cfg.model_path).expanduser()
    if not str(cfg.model_path):
        raise CheckpointError("no model given: set model_path to an Ianvs/RFNet .pth checkpoint or an .onnx file")
    cache_dir = Path(cfg.cache_dir).expanduser()
    calibration = None
    if precision in CALIBRATED:
        calibration = cfg.calibration or load_calibration(cache_dir, cfg.spec)
        if calibration is None:
            raise EngineError(f"{backend.name} {precision} needs calibration frames: none are stored for "
                              f"{cfg.spec} in {cache_dir}; give some (the node gathers them from the camera)")
    if backend.takes_onnx:
        source, version = onnx_for(model_path, cfg.spec, cache_dir)
    else:
        if model_path.suffix == ".onnx":
            raise EngineError(f"the {backend.name} backend needs the .pth checkpoint, not an ONNX file")
        source, version = require_checkpoint_file(model_path), file_sha256(model_path)[:12]
    engine = backend.build(BuildRequest(source, cfg.spec, precision, cache_dir, cfg.device, cfg.threads,
                                        calibration))
    return LoadedEngine(engine, version, source if backend.takes_onnx else None, precision)

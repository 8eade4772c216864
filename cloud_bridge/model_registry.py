"""The RFNet versions the bridge can run itself, found by file hash in one directory.

A robot names its model version (the first 12 hex digits of the sha256 of its
checkpoint or ONNX file) in every hard frame. When the same file is here, the registry
gives a predictor of that version (`predictor_for`), which the refiner runs on the
uploaded RGB-D frame to get full logits for the vote.

The directory holds checkpoints (*.pth), and may be the model publisher's directory
(cloud_bridge.model_push: <version>/model.onnx with its manifest), so the versions
pushed to the robots are found too; an ONNX model runs at the spec its manifest names.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from rfnet.checkpoint import CheckpointError, load_checkpoint, model_version
from rfnet.engines import EngineConfig, EngineError, ModelSpec, SegmentationEngine, load_engine
from rfnet.preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb

from .config import ModelsConfig

log = logging.getLogger(__name__)


class EnginePredictor:
    """A loaded model that gives (C, H, W) logits for a frame, preprocessed as on the robot."""

    def __init__(self, engine: SegmentationEngine, version: str, depth_units_per_metre: float):
        self.engine, self.version = engine, version
        self.spec = engine.spec
        self._pre = PreprocessConfig(self.spec.input_height, self.spec.input_width, depth_units_per_metre)

    def logits(self, rgb: np.ndarray, depth_m: np.ndarray | None) -> np.ndarray:
        """(C, H, W) logits at the frame's own resolution."""
        depth = None if depth_m is None or not self.spec.use_depth else preprocess_depth(depth_m, self._pre)[0]
        out = self.engine.infer(preprocess_rgb(rgb, self._pre), depth, return_logits=True)
        return resize_logits(out.logits, rgb.shape[:2])


def resize_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W), bilinear like the network's own final upsampling."""
    h, w = size
    if logits.shape[1:] == (h, w):
        return logits
    # cv2 resizes channels-last.
    hwc = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
    if hwc.ndim == 2:   # one class: cv2 drops the channel axis
        hwc = hwc[..., None]
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


class ModelRegistry:
    def __init__(self, config: ModelsConfig):
        self.config = config
        self._paths: dict[str, Path] = {}
        self._known: set[tuple[Path, int, int]] = set()   # files hashed: path, mtime, size
        self._predictors: dict[tuple[str, bool], EnginePredictor] = {}
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        directory = Path(self.config.directory).expanduser() if self.config.directory else None
        if directory is None or not directory.is_dir():
            return
        # A published version is complete once its manifest is written (model_push).
        published = [m.parent / "model.onnx" for m in sorted(directory.glob("*/manifest.json"))]
        for path in sorted(directory.glob("*.pth")) + [p for p in published if p.is_file()]:
            stat = path.stat()
            seen = (path, stat.st_mtime_ns, stat.st_size)
            if seen in self._known:   # hashing every 100 MB file on each unknown version would stall the vote
                continue
            self._known.add(seen)
            self._paths.setdefault(model_version(path), path)

    @property
    def versions(self) -> list[str]:
        return sorted(self._paths)

    def predictor_for(self, version: str, use_depth: bool = True) -> EnginePredictor | None:
        """The predictor of `version` (RGB-D or RGB-only), loaded on first use; None if the
        bridge lacks that version."""
        with self._lock:
            if (version, use_depth) in self._predictors:
                return self._predictors[version, use_depth]
            if version not in self._paths:
                self.rescan()   # a checkpoint may have been added since
            path = self._paths.get(version)
            if path is None:
                return None
            cfg = self.config
            try:
                if path.suffix == ".onnx":
                    spec = _published_spec(path)
                    if spec.use_depth != use_depth:   # an exported graph has one input set
                        return None
                else:
                    spec = ModelSpec(load_checkpoint(path).num_classes, cfg.input_height, cfg.input_width, use_depth)
                engine = load_engine(EngineConfig(str(path), spec, cfg.backend, cfg.cache_dir,
                                                  device="auto")).engine
            except (CheckpointError, EngineError, OSError, ValueError, KeyError, TypeError) as e:
                log.error("model %s (%s) cannot be loaded, falling back to majority vote: %s", version, path, e)
                self._paths.pop(version)
                return None
            log.info("loaded model %s (%s) from %s for logit votes", version, spec.mode, path)
            predictor = EnginePredictor(engine, version, cfg.depth_units_per_metre)
            self._predictors[version, use_depth] = predictor
            return predictor


def _published_spec(model_path: Path) -> ModelSpec:
    """The spec in the manifest next to a published model (model_push layout)."""
    spec = json.loads((model_path.parent / "manifest.json").read_bytes())["spec"]
    return ModelSpec(int(spec["num_classes"]), int(spec["input_height"]), int(spec["input_width"]),
                     bool(spec["use_depth"]))

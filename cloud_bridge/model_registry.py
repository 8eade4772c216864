"""The RFNet versions the bridge can run itself, found by file hash in one directory.

A robot names its model version (the first 12 hex digits of the sha256 of its
checkpoint or ONNX file) in every hard frame. When the same file is here, the bridge
runs it on the uploaded RGB-D frame to get full logits for the logit vote.

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


class ModelRegistry:
    def __init__(self, config: ModelsConfig):
        self.config = config
        self._paths: dict[str, Path] = {}
        self._known: set[tuple[Path, int, int]] = set()   # files hashed: path, mtime, size
        self._engines: dict[tuple[str, bool], SegmentationEngine] = {}
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

    def engine_for(self, version: str, use_depth: bool = True) -> SegmentationEngine | None:
        """The engine for `version` (RGB-D or RGB-only), loaded on first use; None if the
        bridge lacks that version."""
        with self._lock:
            if (version, use_depth) in self._engines:
                return self._engines[version, use_depth]
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
            self._engines[version, use_depth] = engine
            return engine

    def logits(self, engine: SegmentationEngine, rgb: np.ndarray, depth_m: np.ndarray | None) -> np.ndarray:
        """(C, H, W) logits at the frame's own resolution, preprocessed as on the robot."""
        cfg, spec = self.config, engine.spec
        pre = PreprocessConfig(spec.input_height, spec.input_width, cfg.depth_units_per_metre)
        depth = None if depth_m is None else preprocess_depth(depth_m, pre)[0]
        out = engine.infer(preprocess_rgb(rgb, pre), depth, return_logits=True)
        h, w = rgb.shape[:2]
        if out.logits.shape[1:] == (h, w):
            return out.logits
        # cv2 resizes channels-last; bilinear like the network's own final upsampling.
        hwc = cv2.resize(np.ascontiguousarray(out.logits.transpose(1, 2, 0)), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def _published_spec(model_path: Path) -> ModelSpec:
    """The spec in the manifest next to a published model (model_push layout)."""
    spec = json.loads((model_path.parent / "manifest.json").read_bytes())["spec"]
    return ModelSpec(int(spec["num_classes"]), int(spec["input_height"]), int(spec["input_width"]),
                     bool(spec["use_depth"]))

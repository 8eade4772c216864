"""The cloud's own semantic evidence (Semantic-Segment-Anything's idea: masks say where
objects are, a strong closed-set model says what they are).

Without it the only class evidence in the cloud is the robot's own prediction, so a
region vote can move a boundary but never fix a wrong class. The cloud model is an
RFNet checkpoint that is stronger than the robot's (trained at a higher input
resolution, with photometric and sensor-noise augmentation; see seg_eval.cloud_model),
run by the bridge on each hard frame. Its provenance (what it was trained on) sits next
to the checkpoint in `<checkpoint>.provenance.json` and is stored with every sample it
labelled, with its version (the first 12 hex digits of the file's sha256).

`evidence` turns the logits into what the vote sums: class probabilities of the robot's
model, of the cloud's, or a weighted mix of the two ("combined").
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rfnet.preprocessing import PreprocessConfig
from seg_core import ConfigError

log = logging.getLogger(__name__)

SEMANTICS = ("edge", "cloud", "combined")
PROVENANCE_SUFFIX = ".provenance.json"


class CloudModelError(RuntimeError):
    """The configured cloud model cannot be loaded."""


@dataclass(frozen=True)
class CloudModelConfig:
    checkpoint: str = ""            # RFNet checkpoint (.pth) of the cloud's own model; "" = none
    input_height: int = 240         # its own input size (it need not match the robots')
    input_width: int = 320
    backend: str = "torch"          # torch | onnxruntime
    device: str = "auto"            # auto | cpu | cuda
    depth_units_per_metre: float = PreprocessConfig.depth_units_per_metre
    cache_dir: str = "~/.cache/cloud_bridge"

    def __post_init__(self):
        if self.input_height < 1 or self.input_width < 1:
            raise ConfigError("cloud model input size must be >= 1")


@dataclass(frozen=True)
class SemanticsConfig:
    """Whose class evidence the masks vote with. `edge`: the robot's model (its exact
    version from models.directory, else the uploaded labels); `cloud`: the cloud model;
    `combined`: (1 - cloud_weight) * robot + cloud_weight * cloud probabilities. Without a
    cloud model, `cloud` and `combined` fall back to `edge` (logged at start).
    `mask_weight` (cloud and combined): 1 = every mask takes one class (SSA); below 1 each
    pixel decides on mask_weight x its mask's mean + the rest x its own probabilities, so
    a mask that merged neighbours does not erase the smaller one (fusion.blended_vote)."""
    mode: str = "combined"
    cloud_weight: float = 0.7
    mask_weight: float = 1.0
    cloud_model: CloudModelConfig = field(default_factory=CloudModelConfig)

    def __post_init__(self):
        if self.mode not in SEMANTICS:
            raise ConfigError(f"semantics.mode {self.mode!r}: use one of {SEMANTICS}")
        if not 0.0 <= self.cloud_weight <= 1.0:
            raise ConfigError(f"semantics.cloud_weight must be in [0, 1], got {self.cloud_weight}")
        if not 0.0 <= self.mask_weight <= 1.0:
            raise ConfigError(f"semantics.mask_weight must be in [0, 1], got {self.mask_weight}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) logits -> probabilities over C, float32."""
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z


def evidence(edge_logits: np.ndarray | None, cloud_logits: np.ndarray | None, mode: str,
             cloud_weight: float) -> np.ndarray:
    """(C, H, W) class probabilities for the vote; `mode` as in SemanticsConfig, with
    whatever logits exist (the caller has checked that the mode's ones do)."""
    if mode == "edge" or cloud_logits is None:
        return softmax(edge_logits)
    if mode == "cloud" or edge_logits is None:
        return softmax(cloud_logits)
    p = softmax(cloud_logits)
    p *= cloud_weight
    p += (1.0 - cloud_weight) * softmax(edge_logits)
    return p


def read_provenance(checkpoint: Path) -> dict:
    path = checkpoint.with_name(checkpoint.name + PROVENANCE_SUFFIX)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        log.warning("cloud model %s has no %s: samples will say its provenance is unknown", checkpoint, path.name)
        return {"unknown": f"no {path.name} next to the checkpoint"}
    except (OSError, ValueError) as e:
        raise CloudModelError(f"cannot read the cloud model's provenance {path}: {e}") from e
    if not isinstance(data, dict):
        raise CloudModelError(f"{path} must hold a JSON object")
    return data


def write_provenance(checkpoint: Path, provenance: dict) -> Path:
    from durable_files import write_atomic

    path = Path(checkpoint).with_name(Path(checkpoint).name + PROVENANCE_SUFFIX)
    write_atomic(path, (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode())
    return path


class CloudModel:
    """The cloud's semantic model as a predictor: logits(rgb, depth_m) -> (C, H, W)."""

    def __init__(self, config: CloudModelConfig):
        from rfnet.checkpoint import CheckpointError, load_checkpoint, model_version
        from rfnet.engines import EngineConfig, EngineError, ModelSpec, load_engine

        path = Path(config.checkpoint).expanduser()
        if not path.is_file():
            raise CloudModelError(f"cloud model checkpoint {path} does not exist (semantics.cloud_model.checkpoint); "
                                  "train one with `python -m seg_eval.cloud_model` or leave it empty")
        try:
            self.num_classes = load_checkpoint(path).num_classes
            spec = ModelSpec(self.num_classes, config.input_height, config.input_width, True)
            self.engine = load_engine(EngineConfig(str(path), spec, config.backend, config.cache_dir,
                                                   device=config.device)).engine
        except (CheckpointError, EngineError, OSError, ValueError) as e:
            raise CloudModelError(f"cloud model {path} cannot be loaded: {e}") from e
        self.path, self.spec = path, spec
        self.version = model_version(path)
        self.provenance = read_provenance(path)
        self._pre = PreprocessConfig(spec.input_height, spec.input_width, config.depth_units_per_metre)

    def logits(self, rgb: np.ndarray, depth_m: np.ndarray | None) -> np.ndarray:
        from rfnet.preprocessing import preprocess_depth, preprocess_rgb

        from .model_registry import resize_logits

        # An RGB-D model: a frame without depth gets the "no return anywhere" input.
        depth = np.zeros(rgb.shape[:2], np.float32) if depth_m is None else depth_m
        out = self.engine.infer(preprocess_rgb(rgb, self._pre), preprocess_depth(depth, self._pre)[0],
                                return_logits=True)
        return resize_logits(out.logits, rgb.shape[:2])

    def tags(self) -> dict[str, str]:
        """What each sample it labelled stores about it (Sample.tags)."""
        return {"cloud_model": self.version,
                "cloud_model_provenance": json.dumps(self.provenance, sort_keys=True, separators=(",", ":"))}

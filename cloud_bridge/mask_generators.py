"""Class-agnostic mask generators for the cloud refinement.

``SamMaskGenerator`` runs Segment Anything's automatic mask generator on an official
checkpoint; without one the bridge falls back to weights-free masks:
``DepthRegionGenerator`` (cloud_bridge.depth_regions: depth, normals and colour),
``RegionProposalGenerator`` (colour superpixels from scikit-image) or ``NoMasks``
(every pixel keeps the answer of the class evidence it votes with). All return a
``MaskSet``, largest mask first, ready for the votes in ``fusion``.

torch and segment_anything are imported where they are used, so a region-only bridge
never pays for loading them.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloud_bridge.fusion import MaskSet
from seg_core import ConfigError

if TYPE_CHECKING:  # depth_regions builds on this module's MaskGenerator
    from .depth_regions import DepthRegionConfig

__all__ = [
    "MaskGenerator", "MaskGeneratorError", "SamConfig", "SamMaskGenerator",
    "RegionProposalConfig", "RegionProposalGenerator", "NoMasks", "MaskGeneratorConfig",
    "build_mask_generator", "load_sam", "resolve_device",
]

logger = logging.getLogger(__name__)

# Official checkpoints (https://github.com/facebookresearch/segment-anything#model-checkpoints)
# and the width of their image encoders, which tells the variants apart.
OFFICIAL_CHECKPOINTS = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
ENCODER_WIDTH = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything/{}"


class MaskGeneratorError(RuntimeError):
    """A mask generator cannot be built here: checkpoint or device problems."""


class MaskGenerator(ABC):
    """Class-agnostic masks of an RGB image."""

    name: str

    @abstractmethod
    def generate(self, rgb: np.ndarray) -> MaskSet:
        """Masks of an (H, W, 3) uint8 RGB image, largest first."""

    def masks(self, frame) -> MaskSet:
        """Masks of a hard frame (segwire.HardFrame); generators that use more than the
        colour image (depth, the frame's identity) override this."""
        return self.generate(frame.rgb)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return rgb


# ---------------------------------------------------------------------------------------
# Segment Anything
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamConfig:
    """Checkpoint, device and ``SamAutomaticMaskGenerator`` settings (its defaults,
    tuned by Meta for vit_h)."""

    checkpoint: str | Path | None = None
    model_type: str = "vit_h"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    min_mask_region_area: int = 0

    def __post_init__(self):
        if self.model_type not in OFFICIAL_CHECKPOINTS:
            raise ConfigError(f"SAM model_type {self.model_type!r} is not one of "
                              f"{sorted(OFFICIAL_CHECKPOINTS)}")
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ConfigError("SAM points_per_side and points_per_batch must be >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SAM {name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_mask_region_area < 0:
            raise ConfigError("SAM min_mask_region_area must be >= 0")


def resolve_device(name: str):
    """``name`` as a torch.device, refusing CUDA where there is none."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise MaskGeneratorError(f"SAM device {name!r} is not a device name "
                                 "('cpu', 'cuda', 'cuda:0', ...)") from e
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise MaskGeneratorError(f"SAM device {name!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise MaskGeneratorError(
            f"SAM device {name!r} was requested but CUDA is not available here (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}, no usable "
            "GPU); set the device to 'cpu' or run the bridge on a GPU machine")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise MaskGeneratorError(f"SAM device {name!r}: this machine has only "
                                 f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def _fit_hint() -> str:
    return ", ".join(f"{t} is {f}" for t, f in OFFICIAL_CHECKPOINTS.items())


def load_sam(checkpoint: str | Path, model_type: str):
    """An official SAM checkpoint in the ``sam_model_registry`` architecture, on the CPU.

    The state dict is read here rather than by the registry builder so that an
    unreadable file, a checkpoint of another variant and a damaged one each get their
    own message, and so that a GPU-saved file loads on a CPU-only machine.
    """
    import torch
    from segment_anything import sam_model_registry

    path = Path(checkpoint)
    if model_type not in OFFICIAL_CHECKPOINTS:
        raise MaskGeneratorError(f"SAM model_type {model_type!r} is not one of "
                                 f"{sorted(OFFICIAL_CHECKPOINTS)}")
    if not path.is_file():
        raise MaskGeneratorError(
            f"SAM checkpoint {path} does not exist. Download the official one for "
            f"{model_type} ({CHECKPOINT_URL.format(OFFICIAL_CHECKPOINTS[model_type])}) "
            "or leave the checkpoint unset to use weights-free region proposals")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and I/O errors all mean the same thing here
        raise MaskGeneratorError(f"could not read SAM checkpoint {path}: {e}") from e
    pos_embed = state.get("image_encoder.pos_embed") if isinstance(state, Mapping) else None
    if pos_embed is None:
        raise MaskGeneratorError(f"{path} is not a Segment Anything checkpoint (no "
                                 f"image_encoder.pos_embed); official ones: {_fit_hint()}")

    # Checked before building: constructing vit_h alone takes seconds and gigabytes.
    width = pos_embed.shape[-1]
    if width != ENCODER_WIDTH[model_type]:
        actual = next((t for t, w in ENCODER_WIDTH.items() if w == width), None)
        what = f"it is a {actual} checkpoint" if actual else f"its encoder is {width} wide"
        raise MaskGeneratorError(f"checkpoint {path} does not fit model_type {model_type}: "
                                 f"{what}; {_fit_hint()}")
    model = sam_model_registry[model_type](checkpoint=None)
    problems = _state_dict_problems(model.state_dict(), state)
    if problems:
        raise MaskGeneratorError(f"checkpoint {path} does not fit model_type {model_type} "
                                 f"({_fit_hint()}): {problems}")
    model.load_state_dict(state)
    return model.eval()


def _state_dict_problems(expected: Mapping, given: Mapping) -> str:
    """A short account of how ``given`` differs from ``expected`` ('' if it does not);
    torch's own message lists every key, hundreds of lines for a SAM."""
    def some(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = expected.keys() - given.keys()
    unexpected = given.keys() - expected.keys()
    resized = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
               for k in sorted(expected.keys() & given.keys())
               if getattr(given[k], "shape", None) != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {some(unexpected)})")
    if resized:
        parts.append(f"{len(resized)} shape mismatches (e.g. {some(resized)})")
    return "; ".join(parts)


class SamMaskGenerator(MaskGenerator):
    """Segment Anything's automatic mask generator (a point grid of prompts, filtered by
    predicted IoU and stability, de-duplicated by NMS)."""

    def __init__(self, model, config: SamConfig = SamConfig(), name: str = "sam"):
        """``model``: a built ``segment_anything.modeling.Sam`` (moved to
        ``config.device``); ``config.checkpoint`` and ``model_type`` are not used here."""
        from segment_anything import SamAutomaticMaskGenerator

        self.name = name
        self.config = config
        self.device = resolve_device(config.device)
        model.to(self.device).eval()
        self._amg = SamAutomaticMaskGenerator(
            model,
            points_per_side=config.points_per_side,
            points_per_batch=config.points_per_batch,
            pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh,
            min_mask_region_area=config.min_mask_region_area,
        )
        # The predictor keeps the current image embedding as state between calls.
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, config: SamConfig) -> SamMaskGenerator:
        if not config.checkpoint:
            raise MaskGeneratorError("SamConfig.checkpoint is not set")
        resolve_device(config.device)  # fail before reading a multi-GB file
        return cls(load_sam(config.checkpoint, config.model_type), config,
                   name=f"sam_{config.model_type}")

    def generate(self, rgb: np.ndarray) -> MaskSet:
        rgb = _check_rgb(rgb)
        with self._lock:
            records = self._amg.generate(rgb)
        return MaskSet.from_masks([r["segmentation"] for r in records], rgb.shape[:2])


# ---------------------------------------------------------------------------------------
# Weights-free region proposals
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionProposalConfig:
    """scikit-image segmentation used as masks: ``felzenszwalb`` (scale, sigma,
    min_size) or ``slic`` (n_segments, compactness). Segments below ``min_area`` pixels
    are dropped, so their pixels keep the edge labels."""

    method: str = "felzenszwalb"
    scale: float = 200.0
    sigma: float = 0.8
    min_size: int = 50
    n_segments: int = 200
    compactness: float = 10.0
    min_area: int = 64

    def __post_init__(self):
        if self.method not in ("felzenszwalb", "slic"):
            raise ConfigError(f"region method must be 'felzenszwalb' or 'slic', "
                              f"got {self.method!r}")
        if self.scale <= 0 or self.sigma < 0 or self.min_size < 1:
            raise ConfigError("felzenszwalb needs scale > 0, sigma >= 0, min_size >= 1")
        if self.n_segments < 1 or self.compactness <= 0:
            raise ConfigError("slic needs n_segments >= 1 and compactness > 0")
        if self.min_area < 1:
            raise ConfigError("region min_area must be >= 1")


class RegionProposalGenerator(MaskGenerator):
    """One mask per colour/texture segment: disjoint regions, so the votes become
    per-segment votes with no nesting."""

    def __init__(self, config: RegionProposalConfig = RegionProposalConfig()):
        self.config = config
        self.name = f"regions_{config.method}"

    def generate(self, rgb: np.ndarray) -> MaskSet:
        from skimage.segmentation import felzenszwalb, slic

        rgb = _check_rgb(rgb)
        c = self.config
        if c.method == "felzenszwalb":
            regions = felzenszwalb(rgb, scale=c.scale, sigma=c.sigma, min_size=c.min_size)
        else:
            regions = slic(rgb, n_segments=c.n_segments, compactness=c.compactness,
                           start_label=0)
        return MaskSet.from_label_image(regions, min_area=c.min_area)


class NoMasks(MaskGenerator):
    """No masks: every pixel keeps its own evidence's answer. Without SAM, on frames where
    colour and depth regions merge objects (dim, noisy ones), a strong per-pixel evidence
    (the cloud's own model) is better left alone than voted inside such regions."""
    name = "no_masks"

    def generate(self, rgb: np.ndarray) -> MaskSet:
        return MaskSet.from_masks([], rgb.shape[:2])


# ---------------------------------------------------------------------------------------
# Choice
# ---------------------------------------------------------------------------------------
FALLBACKS = ("depth_regions", "regions", "none")


@dataclass(frozen=True)
class MaskGeneratorConfig:
    """SAM when ``sam.checkpoint`` is set; otherwise the weights-free ``fallback`` (``regions``
    by default: on dim 320x240 development frames depth regions merged more objects than
    colour regions; at 480x640, bench/refine.py, they did better: measure on your camera):
    ``depth_regions`` (RGB-D: depth, normals and colour), ``regions`` (colour only) or
    ``none`` (per-pixel evidence)."""

    sam: SamConfig = field(default_factory=SamConfig)
    fallback: str = "regions"
    depth_regions: DepthRegionConfig = field(default_factory=lambda: _depth_region_config())
    regions: RegionProposalConfig = field(default_factory=RegionProposalConfig)

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise ConfigError(f"refinement.fallback {self.fallback!r}: use one of {FALLBACKS}")


def _depth_region_config():
    from .depth_regions import DepthRegionConfig
    return DepthRegionConfig()


def build_mask_generator(cfg: MaskGeneratorConfig) -> MaskGenerator:
    if cfg.sam.checkpoint:
        generator = SamMaskGenerator.from_checkpoint(cfg.sam)
        logger.info("mask generator: SAM %s from %s on %s", cfg.sam.model_type,
                    cfg.sam.checkpoint, generator.device)
        return generator
    what = {"depth_regions": "depth/normal/colour regions", "regions": f"{cfg.regions.method} colour regions",
            "none": "per-pixel class evidence (no masks)"}[cfg.fallback]
    logger.warning(
        "\n"
        "*** No SAM checkpoint configured: refinement uses weights-free %s\n"
        "*** instead of Segment Anything masks. Surfaces, colour segments or single pixels\n"
        "*** are not objects, so refined labels are MUCH LOWER QUALITY.\n"
        "*** Set the SAM checkpoint (and matching model_type) to fix: %s.",
        what, _fit_hint())
    if cfg.fallback == "depth_regions":
        from .depth_regions import DepthRegionGenerator
        return DepthRegionGenerator(cfg.depth_regions)
    if cfg.fallback == "none":
        return NoMasks()
    return RegionProposalGenerator(cfg.regions)

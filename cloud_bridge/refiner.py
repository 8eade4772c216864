"""Refine a hard frame's labels: class-agnostic masks + class evidence voted inside them.

The evidence (SemanticsConfig.mode):
  * edge: the robot's model. Logit vote (Ianvs) when the bridge holds the robot's exact
    model version (the registry gives a predictor for it), SSA majority vote over the
    uploaded edge labels otherwise;
  * cloud: the cloud's own semantic model (cloud_bridge.cloud_semantics), probability vote;
  * combined: a weighted mix of both models' class probabilities (the uploaded labels
    stand in for the robot's model when the bridge lacks its version).

Every refinement comes with a per-pixel confidence (fusion.probability_vote /
majority_vote_confidence) that pseudo-label training uses, and with tags naming the
cloud model's version and provenance when it voted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segwire import HardFrame

from .cloud_semantics import CloudModel, SemanticsConfig, evidence
from .config import BridgeConfig
from .fusion import blended_vote, majority_vote_confidence, probability_vote
from .mask_generators import MaskGenerator, SamMaskGenerator, build_mask_generator
from .model_registry import ModelRegistry

# How much a one-hot uploaded edge label counts as a probability when the robot's
# model itself is not here: sure, but not so sure that the cloud model cannot outvote it.
UPLOADED_LABEL_PROBABILITY = 0.9


@dataclass
class Refinement:
    labels: np.ndarray       # (H, W) uint8
    refiner: str             # e.g. "sam_vit_b+logit_vote", "depth_regions+vote(edge+cloud)"
    label_source: str        # "sam" or "region" (sample store vocabulary)
    confidence: np.ndarray | None = None        # (H, W) uint8, 255 = certain
    tags: dict[str, str] = field(default_factory=dict)


class Refiner:
    def __init__(self, generator: MaskGenerator, registry: ModelRegistry,
                 semantics: SemanticsConfig = SemanticsConfig(mode="edge"), cloud: CloudModel | None = None):
        self.generator, self.registry = generator, registry
        self.semantics, self.cloud = semantics, cloud
        # Without a cloud model only the robot's evidence is left.
        self.mode = semantics.mode if cloud is not None else "edge"

    def describe(self) -> str:
        models = ", ".join(self.registry.versions) or "none (majority vote only)"
        text = f"{self.generator.name} masks; robot models for logit votes: {models}; semantics: {self.mode}"
        if self.cloud is not None:
            text += f" (cloud model {self.cloud.version} from {self.cloud.path}"
            text += f", weight {self.semantics.cloud_weight:g})" if self.mode == "combined" else ")"
        return text

    def refine(self, frame: HardFrame) -> Refinement:
        masks = self.generator.masks(frame)
        source = "sam" if isinstance(self.generator, SamMaskGenerator) else "region"
        edge_logits = cloud_logits = None
        if self.mode in ("edge", "combined"):
            predictor = self.registry.predictor_for(frame.model_version, use_depth=frame.depth_m is not None)
            if predictor is not None:
                edge_logits = predictor.logits(frame.rgb, frame.depth_m)
        if self.mode in ("cloud", "combined"):
            cloud_logits = self.cloud.logits(frame.rgb, frame.depth_m)

        tags = {"semantics": self.mode}
        if cloud_logits is not None:
            tags.update(self.cloud.tags())
        labels, conf, vote_name = vote(masks, frame.edge_labels, edge_logits, cloud_logits, self.mode,
                                       self.semantics.cloud_weight, self.semantics.mask_weight)
        return Refinement(labels, f"{self.generator.name}+{vote_name}", source, conf, tags)


def vote(masks, edge_labels: np.ndarray, edge_logits: np.ndarray | None, cloud_logits: np.ndarray | None,
         mode: str, cloud_weight: float, mask_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, str]:
    """Labels, confidence and the vote's name from whatever evidence there is (see the
    module doc): the logits of the robot's model and of the cloud model (either may be
    None) and the uploaded edge labels. `mask_weight` < 1 blends a mask's mean with each
    pixel's own cloud evidence instead of painting the mask (fusion.blended_vote)."""
    if cloud_logits is None or mode == "edge":
        if edge_logits is None:
            labels, conf = majority_vote_confidence(masks, edge_labels)
            return labels, conf, "majority_vote"
        # The Ianvs logit vote decides; the probabilities say how sure it is.
        labels, conf = probability_vote(masks, evidence(edge_logits, None, "edge", 0.0), scores=edge_logits)
        return labels, conf, "logit_vote"
    if mode == "cloud":
        probs, used = evidence(None, cloud_logits, "cloud", 1.0), "cloud"
    elif edge_logits is not None:
        probs, used = evidence(edge_logits, cloud_logits, "combined", cloud_weight), "edge+cloud"
    else:
        probs = evidence(None, cloud_logits, "cloud", 1.0)
        probs *= cloud_weight
        probs += (1.0 - cloud_weight) * uploaded_label_probabilities(edge_labels, probs.shape[0])
        used = "edge_labels+cloud"
    if mask_weight < 1.0:
        labels, conf = blended_vote(masks, probs, mask_weight)
        return labels, conf, f"blended_vote({used}, {mask_weight:g})"
    labels, conf = probability_vote(masks, probs)
    return labels, conf, f"vote({used})"


def uploaded_label_probabilities(edge_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, H, W) probabilities from uploaded labels: UPLOADED_LABEL_PROBABILITY on the
    label, the rest spread over the other classes; ignore/out-of-range labels uniform."""
    c = num_classes
    rest = (1.0 - UPLOADED_LABEL_PROBABILITY) / max(c - 1, 1)
    probs = np.full((c,) + edge_labels.shape, rest, np.float32)
    known = edge_labels < c
    ys, xs = np.nonzero(known)
    probs[edge_labels[known].astype(np.intp), ys, xs] = UPLOADED_LABEL_PROBABILITY
    probs[:, ~known] = 1.0 / c
    return probs


def build_refiner(config: BridgeConfig) -> Refiner:
    cloud = CloudModel(config.semantics.cloud_model) if config.semantics.cloud_model.checkpoint else None
    return Refiner(build_mask_generator(config.refinement), ModelRegistry(config.models), config.semantics, cloud)

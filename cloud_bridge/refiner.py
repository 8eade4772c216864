"""Refine a hard frame's labels: class-agnostic masks + the edge model's class evidence.

Logit vote when the bridge holds the robot's exact model version (it runs it on
the uploaded frame), SSA majority vote over the uploaded edge labels otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segwire import HardFrame

from .config import BridgeConfig
from .fusion import logit_vote, majority_vote
from .mask_generators import MaskGenerator, SamMaskGenerator, build_mask_generator
from .model_registry import ModelRegistry


@dataclass
class Refinement:
    labels: np.ndarray   # (H, W) uint8
    refiner: str         # e.g. "sam_vit_b+logit_vote"
    label_source: str    # "sam" or "region" (sample store vocabulary)


class Refiner:
    def __init__(self, generator: MaskGenerator, registry: ModelRegistry):
        self.generator = generator
        self.registry = registry

    def describe(self) -> str:
        models = ", ".join(self.registry.versions) or "none (majority vote only)"
        return f"{self.generator.name} masks; models for logit votes: {models}"

    def refine(self, frame: HardFrame) -> Refinement:
        masks = self.generator.generate(frame.rgb)
        engine = self.registry.engine_for(frame.model_version, use_depth=frame.depth_m is not None)
        if engine is not None:
            labels = logit_vote(masks, self.registry.logits(engine, frame.rgb, frame.depth_m))
            vote = "logit_vote"
        else:
            labels = majority_vote(masks, frame.edge_labels)
            vote = "majority_vote"
        source = "sam" if isinstance(self.generator, SamMaskGenerator) else "region"
        return Refinement(labels, f"{self.generator.name}+{vote}", source)


def build_refiner(config: BridgeConfig) -> Refiner:
    return Refiner(build_mask_generator(config.refinement), ModelRegistry(config.models))

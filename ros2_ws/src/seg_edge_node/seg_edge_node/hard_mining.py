"""Hard-example mining: score how unsure the edge model was, decide what to upload.

Policies (every score is a hardness in [0, 1], higher = harder):
- confidence_fraction (KubeEdge-Ianvs): the fraction of pixels whose top-1 softmax
  probability exceeds `confidence_threshold`; the frame is hard when that fraction is
  not above `fraction_threshold`. score = 1 - fraction.
- entropy (KubeEdge-Sedna): per-pixel certainty 1 + sum(p log p) / log N (1 for a
  one-hot distribution, 0 for a uniform one), averaged over the frame; hard when the
  average is below `entropy_threshold`. score = 1 - average certainty.
- margin: top-1 minus top-2 probability, averaged; hard when below `margin_threshold`.
  score = 1 - average margin.
- random: a baseline that calls a frame hard with probability `random_rate`.

The confidence rule uses the full-resolution confidence map (as Ianvs does); entropy
and margin need every class probability and are computed on the network's own output
grid (1/4 resolution), which keeps them cheap enough for every frame.

On top of the policy, a token bucket caps uploads at `budget_per_minute`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from seg_core import ConfigError, TokenBucket

POLICIES = ("confidence_fraction", "entropy", "margin", "random")


@dataclass(frozen=True)
class MiningConfig:
    policy: str = "confidence_fraction"
    confidence_threshold: float = 0.9
    fraction_threshold: float = 0.95
    entropy_threshold: float = 0.5
    margin_threshold: float = 0.5
    random_rate: float = 0.1
    budget_per_minute: float = 6.0   # hard frames uploaded per minute at most; 0 = none
    budget_burst: int = 3            # uploads allowed back to back after a quiet spell
    seed: int = 0                    # of the random policy's generator (reproducible runs)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"parameter mining.policy={self.policy!r}: use one of {', '.join(POLICIES)}")
        for name in ("confidence_threshold", "fraction_threshold", "entropy_threshold",
                     "margin_threshold", "random_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"parameter mining.{name}={value}: use a value in [0, 1]")
        if not self.budget_per_minute >= 0.0 or math.isinf(self.budget_per_minute):
            raise ConfigError(f"parameter mining.budget_per_minute={self.budget_per_minute}: "
                              "use a finite value >= 0")
        if self.budget_burst < 1:
            raise ConfigError(f"parameter mining.budget_burst={self.budget_burst}: use 1 or more")


@dataclass(frozen=True)
class MiningDecision:
    policy: str
    score: float       # hardness in [0, 1]
    is_hard: bool      # what the policy says
    upload: bool       # hard and within the upload budget


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of (C, H, W) logits."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    e /= e.sum(axis=0, keepdims=True)
    return e


def confident_fraction(confidence: np.ndarray, threshold: float) -> float:
    return float(np.count_nonzero(confidence > threshold)) / confidence.size


def mean_certainty(probs: np.ndarray) -> float:
    """Average over pixels of 1 + sum_c p log p / log C (Sedna's normalized entropy rule)."""
    plogp = probs * np.log(np.clip(probs, 1e-12, None))
    return float(np.mean(1.0 + plogp.sum(axis=0) / math.log(probs.shape[0])))


def mean_margin(probs: np.ndarray) -> float:
    top2 = np.partition(probs, probs.shape[0] - 2, axis=0)[-2:]
    return float(np.mean(top2[1] - top2[0]))


class HardExampleMiner:
    def __init__(self, config: MiningConfig, clock=time.monotonic):
        self.config = config
        # A zero budget uploads nothing, not even a first burst.
        self._bucket = TokenBucket(config.budget_per_minute / 60.0,
                                   config.budget_burst if config.budget_per_minute > 0 else 0, clock)
        self._rng = np.random.default_rng(config.seed)
        self.hard_frames = 0
        self.over_budget = 0

    def assess(self, confidence: np.ndarray, logits_lowres: np.ndarray | None) -> MiningDecision:
        """confidence: (H, W) top-1 probabilities; logits_lowres: (C, h, w), needed by entropy/margin."""
        cfg = self.config
        if cfg.policy == "confidence_fraction":
            fraction = confident_fraction(confidence, cfg.confidence_threshold)
            score, hard = 1.0 - fraction, fraction <= cfg.fraction_threshold
        elif cfg.policy == "random":
            draw = float(self._rng.random())
            score, hard = draw, draw < cfg.random_rate
        else:
            if logits_lowres is None:
                raise ValueError(f"mining policy {cfg.policy!r} needs the class logits")
            probs = softmax(logits_lowres.astype(np.float32, copy=False))
            if cfg.policy == "entropy":
                certainty = mean_certainty(probs)
                score, hard = 1.0 - certainty, certainty < cfg.entropy_threshold
            else:
                margin = mean_margin(probs)
                score, hard = 1.0 - margin, margin < cfg.margin_threshold
        upload = False
        if hard:
            self.hard_frames += 1
            upload = self._bucket.take()
            self.over_budget += not upload
        return MiningDecision(cfg.policy, float(score), bool(hard), upload)

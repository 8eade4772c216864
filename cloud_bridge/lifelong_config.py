"""Settings of the replay buffer and of lifelong retraining (the `lifelong:` section of
the bridge YAML).

Kept apart from cloud_bridge.lifelong and cloud_bridge.replay_buffer, which import torch:
the bridge reads its whole config at start-up and must not pay for torch to do it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from seg_core import ConfigError

from .pseudo_labels import PseudoLabelConfig

# A sample's label sources from most to least trusted. The store keeps one label map
# per frame; this order decides which label may replace which, and what is evicted first.
LABEL_PREFERENCE = ("human", "ground_truth", "sam", "region")


@dataclass(frozen=True)
class LabelSourcesConfig:
    """Which label sources count as training labels. Region proposals are off by
    default: without SAM they are far coarser than what the robot already predicts."""
    human: bool = True
    ground_truth: bool = True
    sam: bool = True
    region: bool = False

    def __post_init__(self) -> None:
        if not self.enabled():
            raise ConfigError("label_sources: enable at least one source")

    def enabled(self) -> tuple[str, ...]:
        """The enabled sources, most trusted first."""
        return tuple(s for s in LABEL_PREFERENCE if getattr(self, s))


@dataclass(frozen=True)
class ReplayBufferConfig:
    max_samples: int = 5000       # cap on stored samples; beyond it the least valuable are evicted
    # 1 frame in N (by a hash of its uuid, so the same frames always) is held out from
    # training and used by the gate as new-task data; 0 holds out nothing.
    holdout_every: int = 5
    task_tag: str = "task"        # Sample.tags key naming the frame's scene/task
    label_sources: LabelSourcesConfig = field(default_factory=LabelSourcesConfig)

    def __post_init__(self) -> None:
        if self.max_samples < 1:
            raise ConfigError(f"max_samples={self.max_samples}: use 1 or more")
        if self.holdout_every == 1 or self.holdout_every < 0:
            raise ConfigError(f"holdout_every={self.holdout_every}: use 0 (none held out) or 2 or more")
        if not self.task_tag:
            raise ConfigError("task_tag must not be empty")


@dataclass(frozen=True)
class RehearsalConfig:
    # Ianvs index of the data the current model was trained on; its frames (and buffer
    # frames already trained on) are replayed so the model does not forget the old task.
    index: str = ""
    ratio: float = 1.0            # replayed frames per new training frame
    max_samples: int = 0          # at most this many replayed frames; 0 = no cap

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise ConfigError(f"rehearsal.ratio={self.ratio}: use 0 or more")
        if self.max_samples < 0:
            raise ConfigError(f"rehearsal.max_samples={self.max_samples}: use 0 (no cap) or more")


@dataclass(frozen=True)
class FineTuneConfig:
    """The rfnet.training.TrainConfig fields a retraining run sets."""
    epochs: int = 5
    batch_size: int = 8
    lr: float = 1e-4              # decoder; encoders get a quarter (rfnet.training)
    input_height: int = 480       # the robots' input size: evaluation must preprocess as they do
    input_width: int = 640
    freeze_bn: bool = True        # small fine-tuning batches would spoil the BatchNorm statistics
    augment: bool = True
    photometric: bool = False     # with augment: photometric and sensor-noise changes too
    seed: int = 0                 # training and the rehearsal draw: same inputs, same candidate
    device: str = "cpu"
    precision: str = "fp32"       # fp32 | bf16 | auto (rfnet.training.TrainConfig)
    class_weights: str = "none"   # none | enet (rfnet.training.TrainConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "input_height", "input_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: use 1 or more")
        if not self.lr > 0:
            raise ConfigError(f"train.lr={self.lr}: use a rate > 0")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"train.precision={self.precision!r}: use fp32, bf16 or auto")
        if self.class_weights not in ("none", "enet"):
            raise ConfigError(f"train.class_weights={self.class_weights!r}: use none or enet")


@dataclass(frozen=True)
class GateConfig:
    """A candidate is published only if both hold (mIoU in [0, 1]):
    new-task mIoU - current's >= min_new_gain, and current's old-task mIoU - candidate's
    <= max_old_drop. A negative max_old_drop demands an old-task gain."""
    min_new_gain: float = 0.02
    max_old_drop: float = 0.01


@dataclass(frozen=True)
class LifelongConfig:
    output_dir: str = ""          # candidates, decision records, trigger marker; "" = <storage_dir>/lifelong
    min_new_samples: int = 50     # new labelled frames in the buffer that trigger a run
    old_task_index: str = ""      # Ianvs index of held-out old-task data (required to run)
    new_task_index: str = ""      # Ianvs index of held-out new-task data; "" = the buffer's held-out frames
    buffer: ReplayBufferConfig = field(default_factory=ReplayBufferConfig)
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    train: FineTuneConfig = field(default_factory=FineTuneConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # Confidence masking of pseudo-labels (class-balanced thresholds, cloud_bridge.pseudo_labels).
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)

    def __post_init__(self) -> None:
        if self.min_new_samples < 1:
            raise ConfigError(f"min_new_samples={self.min_new_samples}: use 1 or more")

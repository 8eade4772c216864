"""The bridge's configuration: YAML in, typed dataclasses out, unknown keys refused.

See cloud_bridge/bridge.yaml for a documented example.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rfnet.preprocessing import PreprocessConfig
from seg_core import ConfigError
from segwire import MqttConnection

from .cloud_semantics import SemanticsConfig
from .lifelong_config import LifelongConfig
from .mask_generators import MaskGeneratorConfig
from .ops_config import HttpConfig, StoreConfig


@dataclass(frozen=True)
class BrokerConfig(MqttConnection):
    """The broker connection (segwire.MqttConnection's fields; client_id defaults to
    "cloud-bridge-<bridge_id>", stable and unique per replica) and the shared subscription."""
    share_group: str = "bridges"   # replicas in one group split the hard frames
    # Unacknowledged frames the broker may hand us at once. 1: the value every mosquitto 2.0
    # keeps (2.0.11 overruns larger ones), and with one worker per replica and the broker
    # next to the bridge, waiting a loopback round trip per frame costs nothing next to a
    # refinement. Raise it on a broker that keeps it (2.0.21 does) and a far-away broker.
    receive_maximum: int = 1

    def __post_init__(self) -> None:
        if self.receive_maximum < 1:
            raise ConfigError("broker.receive_maximum must be 1 or more")
        self.check("broker")


@dataclass(frozen=True)
class ModelsConfig:
    # Directory of RFNet checkpoints (*.pth), or the model publisher's directory
    # (<version>/model.onnx). When it holds the model version a robot used, the bridge
    # runs that model itself and fuses by logit vote; otherwise it votes with the
    # robot's uploaded labels.
    directory: str = ""
    backend: str = "onnxruntime"
    input_height: int = 480
    input_width: int = 640
    depth_units_per_metre: float = PreprocessConfig.depth_units_per_metre
    cache_dir: str = "~/.cache/cloud_bridge"


@dataclass(frozen=True)
class BridgeConfig:
    bridge_id: str = "bridge-1"
    storage_dir: str = "~/.local/share/cloud_bridge"
    workers: int = 1
    max_payload_mb: float = 8.0
    stats_period_s: float = 5.0
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    # Masks: SAM when refinement.sam.checkpoint is set (an official sam_vit_{b,l,h} file,
    # with the matching model_type), weights-free region proposals otherwise.
    refinement: MaskGeneratorConfig = field(default_factory=MaskGeneratorConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    # Whose class evidence the masks vote with: the robot's model, the cloud's own, or both.
    semantics: SemanticsConfig = field(default_factory=SemanticsConfig)
    # Retraining from the stored samples (cloud_bridge.lifelong, cloud_bridge.replay_buffer).
    lifelong: LifelongConfig = field(default_factory=LifelongConfig)
    # Where samples and the trainer's bookkeeping live (sqlite: this host; postgres: shared).
    store: StoreConfig = field(default_factory=StoreConfig)
    # Probes and Prometheus metrics (cloud_bridge.service_http).
    http: HttpConfig = field(default_factory=HttpConfig)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers}: use 1 or more")
        if not self.max_payload_mb > 0:
            raise ConfigError(f"max_payload_mb={self.max_payload_mb}: use a size > 0")
        if not self.stats_period_s > 0:
            raise ConfigError(f"stats_period_s={self.stats_period_s}: use a period > 0")


def _build(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'the config'}; known: {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = known[name].default if known[name].default is not dataclasses.MISSING \
            else known[name].default_factory()
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, path)
        elif default is None:  # optional paths
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{path}: expected a path string, got {value!r}")
            values[name] = value or None
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            if type(value) is not type(default):
                raise ConfigError(f"{path}: expected {type(default).__name__}, got {value!r}")
            values[name] = value
        else:  # numbers: an int is fine where a float is expected, not the other way round
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (isinstance(default, int) and not isinstance(value, int)):
                raise ConfigError(f"{path}: expected {type(default).__name__}, got {value!r}")
            values[name] = type(default)(value)
    try:
        return cls(**values)
    except ValueError as e:  # the sections' own checks; some name their section already
        message = str(e)
        raise ConfigError(message if not where or message.startswith(where) else f"{where}: {message}") from e


def load_bridge_config(path: str | Path | None) -> BridgeConfig:
    """Read a YAML config (None: all defaults) and validate it."""
    data = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read bridge config {path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
    return _build(BridgeConfig, data, "")

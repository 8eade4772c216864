"""The node's configuration: one typed object, filled from ROS parameters at the edge.

Every scalar field is a ROS parameter of the same name, declared with this default;
the nested sections become dotted names (`mining.policy`, `uplink.host`), which is
how ROS 2 reads nested keys in a parameter YAML. So `launch/edge_params.yaml`,
`--ros-args -p name:=value` and this file agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from rfnet.engines import AUTO, BACKENDS, backend_named
from rfnet.preprocessing import PreprocessConfig
from seg_core import ConfigError

from .hard_mining import MiningConfig
from .int8_calibration import Int8Config
from .model_manager import ModelManagerConfig
from .uplink import UplinkConfig

SECTIONS = {"mining": MiningConfig, "uplink": UplinkConfig, "updates": ModelManagerConfig, "int8": Int8Config}


@dataclass(frozen=True)
class EdgeNodeConfig:
    # Topics. The RGB topic carries sensor_msgs/Image, or CompressedImage when rgb_compressed.
    rgb_topic: str = "/camera/color/image_raw"
    rgb_compressed: bool = False
    depth_topic: str = "/camera/aligned_depth_to_color/image_raw"
    # RGB-D model (depth paired by stamp) or RGB-only model (depth topic ignored).
    use_depth: bool = True
    pair_tolerance_s: float = 0.02     # |stamp(rgb) - stamp(depth)| accepted as one frame
    pair_timeout_s: float = 0.5        # an unpaired frame older than this is dropped and counted
    # Model and engine.
    model_path: str = ""               # Ianvs/RFNet .pth checkpoint or exported .onnx
    backend: str = "onnxruntime"       # a name in rfnet.engines.engine_registry
    device: str = "auto"               # onnxruntime: auto|cpu|cuda; torch: cpu|cuda:0; tensorrt: auto|cuda:N
    precision: str = AUTO              # one of the backend's precisions; auto: its first (fp32, tensorrt fp16)
    threads: int = 0                   # onnxruntime intra-op threads, 0 = library default
    cache_dir: str = "~/.cache/seg_edge"
    input_height: int = 480
    input_width: int = 640
    class_file: str = ""               # empty: the packaged cloud-robotics 30 classes
    depth_units_per_metre: float = PreprocessConfig.depth_units_per_metre  # metres -> the 8-bit depth scale the model was trained on
    # QoS of the camera subscriptions: "sensor_data" (best effort) or "reliable".
    input_qos: str = "sensor_data"
    overlay_alpha: float = 0.5
    diagnostics_period_s: float = 1.0
    # Diagnostics WARN while bad input, unpaired RGB or errors were seen in this window.
    diagnostics_window_s: float = 10.0
    # Diagnostics WARN when no RGB frame came for this many of the camera's own frame periods.
    camera_stall_periods: int = 10
    # Hard-example mining and the MQTT uplink of hard frames (uplink.host empty = off).
    mining: MiningConfig = field(default_factory=MiningConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    # Signed model updates from the cloud, hot-swapped between frames (updates.enabled).
    updates: ModelManagerConfig = field(default_factory=ModelManagerConfig)
    # precision int8: where the calibration frames come from (the camera, or a dataset index).
    int8: Int8Config = field(default_factory=Int8Config)

    @classmethod
    def parameter_defaults(cls) -> dict[str, object]:
        """Flat ROS parameter names -> defaults, sections as `section.field`."""
        return cls().to_parameters()

    def to_parameters(self) -> dict[str, object]:
        """Flat ROS parameter names -> this config's values, sections as `section.field`."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                out.update({f"{f.name}.{g.name}": getattr(value, g.name) for g in fields(value)})
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_parameters(cls, values: dict[str, object]) -> "EdgeNodeConfig":
        """The inverse of parameter_defaults: flat dotted names -> nested config."""
        top = {k: v for k, v in values.items() if "." not in k}
        for section, section_cls in SECTIONS.items():
            prefix = section + "."
            top[section] = section_cls(**{k[len(prefix):]: v for k, v in values.items()
                                          if k.startswith(prefix)})
        return cls(**top)

    def __post_init__(self) -> None:
        """ConfigError naming the parameter and the accepted values (the sections checked
        themselves when they were built)."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"parameter backend={self.backend!r}: use {', '.join(BACKENDS)}")
        try:
            backend_named(self.backend).resolve(self.precision)
        except ValueError as e:
            raise ConfigError(f"parameter {e}") from None
        if self.updates.enabled and not self.uplink.enabled:
            raise ConfigError("parameter updates.enabled needs the broker: set uplink.host (and port)")
        if self.updates.enabled and self.backend == "torch":
            raise ConfigError("model updates arrive as ONNX files: use backend onnxruntime or tensorrt")
        if self.input_qos not in ("sensor_data", "reliable"):
            raise ConfigError(f"parameter input_qos={self.input_qos!r}: use sensor_data or reliable")
        if self.input_height < 32 or self.input_width < 32 or self.input_height % 32 or self.input_width % 32:
            raise ConfigError(f"parameters input_height/input_width={self.input_height}x{self.input_width}: "
                              "use multiples of 32 (RFNet downsamples by 32), e.g. 480x640")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError(f"parameter overlay_alpha={self.overlay_alpha}: use a value in [0, 1]")
        # Written as `not (ok)` so that NaN (and inf, which int(s * 1e9) cannot take) is rejected too.
        if not (0.0 <= self.pair_tolerance_s < math.inf and 0.0 < self.pair_timeout_s < math.inf):
            raise ConfigError("parameters pair_tolerance_s >= 0 and pair_timeout_s > 0 (finite) are required")
        if not 0.0 < self.depth_units_per_metre < math.inf:
            raise ConfigError(f"parameter depth_units_per_metre={self.depth_units_per_metre}: use a positive "
                              "number, the model's 8-bit depth units per metre (e.g. 25.5 maps 0..10 m)")
        if not 0.0 < self.diagnostics_period_s < math.inf:
            raise ConfigError(f"parameter diagnostics_period_s={self.diagnostics_period_s}: use a period > 0 s")
        if not 0.0 < self.diagnostics_window_s < math.inf:
            raise ConfigError(f"parameter diagnostics_window_s={self.diagnostics_window_s}: use a window > 0 s")
        if self.camera_stall_periods < 1:
            raise ConfigError(f"parameter camera_stall_periods={self.camera_stall_periods}: use 1 or more")

    @property
    def resolved_precision(self) -> str:
        return backend_named(self.backend).resolve(self.precision)

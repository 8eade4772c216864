"""What each parameter means, its range, and whether it can change while the node runs.

The node turns these into rcl_interfaces ParameterDescriptors (`ros2 param describe`
shows them): a parameter not in LIVE_PARAMETERS is read-only after start, because
changing it means reloading the model, resubscribing or reconnecting. The live ones
are applied between two frames by EdgeRuntime.apply_live. Kept ROS-free so the unit
tests can check it covers every parameter of EdgeNodeConfig.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamInfo:
    description: str
    range: tuple[float, float] | None = None    # inclusive; ints for integer parameters
    live: bool = False                          # may change while the node runs


_UNIT = (0.0, 1.0)
PARAMETERS: dict[str, ParamInfo] = {
    "rgb_topic": ParamInfo("colour image topic (sensor_msgs/Image, or CompressedImage with rgb_compressed)"),
    "rgb_compressed": ParamInfo("subscribe to a sensor_msgs/CompressedImage (JPEG/PNG) on rgb_topic"),
    "depth_topic": ParamInfo("depth topic registered to the colour camera (16UC1 mm or 32FC1 m); use_depth only"),
    "use_depth": ParamInfo("true: RGB-D model, each RGB frame waits for depth with its stamp; false: RGB only"),
    "pair_tolerance_s": ParamInfo("largest RGB/depth stamp difference taken as one frame", (0.0, 1.0)),
    "pair_timeout_s": ParamInfo("an RGB or depth image unpaired for this long is dropped and counted", (0.001, 10.0)),
    "model_path": ParamInfo("Ianvs/RFNet .pth checkpoint or exported .onnx (required)"),
    "backend": ParamInfo("inference backend: onnxruntime | tensorrt | torch (rfnet.engines.engine_registry)"),
    "device": ParamInfo("onnxruntime: auto|cpu|cuda; torch: cpu|cuda:N; tensorrt: auto|cuda:N"),
    "precision": ParamInfo("auto (the backend's default) | fp32 | fp16 (tensorrt) | int8 (calibrated on camera "
                           "frames or int8.calibration_index)"),
    "threads": ParamInfo("onnxruntime intra-op threads; 0: the library default", (0, 256)),
    "cache_dir": ParamInfo("where ONNX exports, INT8 models, calibration frames and TensorRT engines are cached"),
    "input_height": ParamInfo("network input height, a multiple of 32", (32, 4096)),
    "input_width": ParamInfo("network input width, a multiple of 32", (32, 4096)),
    "class_file": ParamInfo("class list YAML; empty: the packaged cloud-robotics 30 classes"),
    "depth_units_per_metre": ParamInfo("8-bit depth units per metre the model was trained with (25.5: 0..10 m)",
                                       (0.001, 10000.0)),
    "input_qos": ParamInfo("camera subscription QoS: sensor_data (best effort) | reliable"),
    "overlay_alpha": ParamInfo("weight of the class colours in ~/overlay", _UNIT, live=True),
    "diagnostics_period_s": ParamInfo("period of the /diagnostics message", (0.01, 3600.0)),
    "diagnostics_window_s": ParamInfo("diagnostics WARN while problems were seen within this window",
                                      (0.1, 3600.0), live=True),
    "camera_stall_periods": ParamInfo("diagnostics WARN after this many camera frame periods without an RGB frame",
                                      (1, 100000), live=True),
    "mining.policy": ParamInfo("hard-example rule: confidence_fraction | entropy | margin | random", live=True),
    "mining.confidence_threshold": ParamInfo("confidence_fraction: a pixel is confident above this", _UNIT, True),
    "mining.fraction_threshold": ParamInfo("confidence_fraction: hard when the confident share is not above this",
                                           _UNIT, True),
    "mining.entropy_threshold": ParamInfo("entropy: hard when the mean certainty is below this", _UNIT, True),
    "mining.margin_threshold": ParamInfo("margin: hard when the mean top-1/top-2 margin is below this", _UNIT, True),
    "mining.random_rate": ParamInfo("random: share of frames called hard", _UNIT, True),
    "mining.budget_per_minute": ParamInfo("hard frames uploaded per minute at most; 0: none", (0.0, 1e6), True),
    "mining.budget_burst": ParamInfo("uploads allowed back to back after a quiet spell", (1, 1000000), True),
    "mining.seed": ParamInfo("seed of the random policy", live=True),
    "uplink.host": ParamInfo("MQTT broker of the cloud bridge; empty: no uplink"),
    "uplink.port": ParamInfo("MQTT broker port", (1, 65535)),
    "uplink.robot_id": ParamInfo("this robot's id in MQTT topics"),
    "uplink.client_id": ParamInfo("MQTT client id; empty: seg-edge-<robot_id>"),
    "uplink.username": ParamInfo("MQTT user name"),
    "uplink.password": ParamInfo("MQTT password (prefer uplink.password_file: parameters show in param dump)"),
    "uplink.password_file": ParamInfo("file whose first line is the MQTT password"),
    "uplink.tls": ParamInfo("TLS to the broker, checking its certificate and host name against uplink.ca_file"),
    "uplink.ca_file": ParamInfo("CA certificate for uplink.tls"),
    "uplink.cert_file": ParamInfo("client certificate (TLS client authentication)"),
    "uplink.key_file": ParamInfo("client key (TLS client authentication)"),
    "uplink.keepalive_s": ParamInfo("MQTT keepalive", (1, 65535)),
    "uplink.session_expiry_s": ParamInfo("MQTT session expiry: how long the broker keeps this robot's queue",
                                         (0, 4294967295)),
    "uplink.spool_dir": ParamInfo("on-disk spool of hard frames not yet answered"),
    "uplink.spool_max_mb": ParamInfo("spool size limit", (0.001, 1e7)),
    "uplink.rgb_format": ParamInfo("uploaded colour image format: jpeg | png"),
    "uplink.jpeg_quality": ParamInfo("JPEG quality of uploaded frames", (1, 100)),
    "uplink.depth_unit_mm": ParamInfo("uploaded depth step in mm; 0: one step of the model's depth scale",
                                      (0, 1000)),
    "uplink.max_inflight": ParamInfo("hard frames in flight to the broker at once", (1, 1000)),
    "uplink.ack_timeout_s": ParamInfo("resend a frame the broker has not acknowledged after this long",
                                      (0.1, 86400.0)),
    "uplink.confirm_timeout_s": ParamInfo("resend a frame the bridge has not answered after this long",
                                          (0.1, 86400.0)),
    "updates.enabled": ParamInfo("take signed model updates from the cloud (needs uplink.host)"),
    "updates.directory": ParamInfo("where downloaded models and the serving pointer are kept"),
    "updates.trusted_keys": ParamInfo("folder of the fleet's trusted *.pub model signing keys"),
    "updates.fleet": ParamInfo("fleet name in the model topics"),
    "updates.keep_versions": ParamInfo("model versions kept on disk, the serving one included", (2, 1000)),
    "updates.canary_min_agreement": ParamInfo("a new model must agree with the serving one on this share of the "
                                              "canary frame", _UNIT),
    "updates.canary_wait_s": ParamInfo("how long a new model waits for a camera frame to be tested on",
                                       (0.0, 86400.0)),
    "int8.calibration_frames": ParamInfo("precision int8: frames in the calibration set", (1, 10000)),
    "int8.sample_every": ParamInfo("precision int8: keep every Nth camera frame for calibration", (1, 100000)),
    "int8.calibration_index": ParamInfo("precision int8: Ianvs index file to calibrate on at start; empty: "
                                        "camera frames"),
    "int8.min_agreement": ParamInfo("precision int8: INT8 labels must agree with the float model's on this "
                                    "share of the newest frame, else the float model stays", _UNIT),
}

LIVE_PARAMETERS = frozenset(name for name, info in PARAMETERS.items() if info.live)

"""The robot-side segmentation node: a thin rclpy adapter over ROS-free modules.

Callbacks only pair messages and drop them into a one-slot mailbox; a worker
thread converts, segments, mines and publishes the newest frame, so inference
never runs on the executor and latency never grows with a backlog. Hard frames
within the upload budget go to the MQTT uplink, whose own thread encodes, spools
and sends them; refined masks from the cloud come back on ~/refined_labels.
"""
from __future__ import annotations

import logging
import sys
import threading
import uuid
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from seg_msgs.msg import ModelStatus, SegmentationResult

from rfnet.checkpoint import CheckpointError
from rfnet.classes import ClassFileError, load_class_list
from rfnet.engines import EngineConfig, EngineError, ModelSpec, load_engine
from rfnet.preprocessing import PreprocessConfig
from segwire import HardFrame, RefinedResult, make_client

from .config import EdgeNodeConfig
from .frame_pairing import StampPairer
from .hard_mining import HardExampleMiner
from .image_conversion import (ImageConversionError, compressed_to_rgb, image_to_depth_m,
                               image_to_rgb, mono8_to_image, rgb_to_image)
from .keep_latest import LatestSlot
from .model_manager import ManagerStatus, ModelManager, ServingModel
from .node_stats import NodeStats
from .overlay import colour_overlay
from .pipeline import SegmentationPipeline
from .uplink import MqttUplink

RELIABLE_OUT = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
LOG_THROTTLE_S = 5.0
MODEL_STATES = {"serving": ModelStatus.STATE_SERVING, "updating": ModelStatus.STATE_UPDATING,
                "failed": ModelStatus.STATE_FAILED, "rolled_back": ModelStatus.STATE_ROLLED_BACK}


class RosLogHandler(logging.Handler):
    """Sends the ROS-free modules' Python logging (uplink, engines) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"[{record.name}] {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            self._ros.error(msg)
        elif record.levelno >= logging.WARNING:
            self._ros.warning(msg)
        elif record.levelno >= logging.INFO:
            self._ros.info(msg)
        else:
            self._ros.debug(msg)


class StartupError(RuntimeError):
    """Configuration or model problem found at start; the node exits with its message."""


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def header_from(stamp: int, frame_id: str):
    header = Image().header
    header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    header.frame_id = frame_id
    return header


class SegEdgeNode(Node):
    def __init__(self):
        super().__init__("seg_edge_node")
        for name in ("seg_edge_node", "rfnet"):
            py_logger = logging.getLogger(name)
            py_logger.addHandler(RosLogHandler(self.get_logger()))
            py_logger.setLevel(logging.INFO)
            py_logger.propagate = False
        for name, default in EdgeNodeConfig.parameter_defaults().items():
            self.declare_parameter(name, default)
        self.config = EdgeNodeConfig.from_parameters(
            {n: self.get_parameter(n).value for n in EdgeNodeConfig.parameter_defaults()})
        self.stats = NodeStats()
        self._slot: LatestSlot[tuple] = LatestSlot()
        self._status_pub = self.create_publisher(ModelStatus, "~/model_status", LATCHED)
        self._publish_status(ModelStatus.STATE_LOADING, version="")
        try:
            self.config.validate()
            self._load_model()
        except (ValueError, CheckpointError, EngineError, ClassFileError) as e:
            self._publish_status(ModelStatus.STATE_FAILED, version="", error=str(e))
            raise StartupError(str(e)) from e

        self._labels_pub = self.create_publisher(Image, "~/labels", RELIABLE_OUT)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", RELIABLE_OUT)
        self._result_pub = self.create_publisher(SegmentationResult, "~/result", RELIABLE_OUT)
        self._refined_pub = self.create_publisher(Image, "~/refined_labels", RELIABLE_OUT)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._uplink = None
        if self.config.uplink.enabled:
            self._uplink = MqttUplink(self.config.uplink, self._on_refined, lambda: self.model_version,
                                      self.config.depth_units_per_metre)
            self._uplink.start()
        self._model_link = None
        if self.config.updates.enabled:
            try:
                self._start_model_updates()
            except (ValueError, OSError) as e:
                raise StartupError(f"model updates: {e}") from e
        self._subscribe()
        self.create_timer(self.config.diagnostics_period_s, self._publish_diagnostics)
        self._publish_status(ModelStatus.STATE_SERVING, version=self.model_version)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="segmentation", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"serving model {self.model_version} on {self.config.backend} "
            f"({self.spec.mode}, {self.spec.input_height}x{self.spec.input_width}); "
            f"rgb={self.config.rgb_topic}" + (f" depth={self.config.depth_topic}" if self.config.use_depth else ""))

    # -- setup -------------------------------------------------------------------------
    def _load_model(self) -> None:
        cfg = self.config
        self.classes = load_class_list(cfg.class_file or None)
        self.palette = self.classes.palette()
        self.spec = ModelSpec(self.classes.num_classes, cfg.input_height, cfg.input_width, cfg.use_depth)
        model_path, number = cfg.model_path, 0
        live = ModelManager.persisted(cfg.updates.directory) if cfg.updates.enabled else None
        if live is not None:   # an update went live before the last shutdown: keep serving it
            model_path, number = str(live.path), live.number
            self.get_logger().info(f"serving model update {live.number} from the last run ({live.path})")
        self.get_logger().info(f"loading {model_path} with {cfg.backend} ...")
        loaded = load_engine(EngineConfig(model_path, self.spec, cfg.backend, cfg.cache_dir,
                                          cfg.device, cfg.threads, cfg.precision))
        self.model_version = loaded.version
        self._serving = ServingModel(number, loaded.version, Path(model_path))
        self.pipeline = SegmentationPipeline(
            loaded.engine, PreprocessConfig(cfg.input_height, cfg.input_width, cfg.depth_units_per_metre),
            HardExampleMiner(cfg.mining))

    def _start_model_updates(self) -> None:
        from segwire.model_keys import load_trusted_keys   # needs cryptography, only with updates

        from .model_download import DownloadOptions, ModelDownloader, MqttModelLink
        from .model_rollback import RollbackCommands

        cfg, up = self.config.updates, self.config.uplink
        trusted = load_trusted_keys(Path(cfg.trusted_keys).expanduser())
        self._manager = ModelManager(cfg, self.pipeline, self._serving, self._build_engine, self._on_model_change)
        # Rollback commands are signed with the manifests' keys and come over the same link.
        rollback = RollbackCommands(cfg.directory, trusted, up.robot_id, cfg.fleet,
                                    lambda: self._manager.serving.number,
                                    lambda number, path: self._manager.offer(number, path, rollback=True),
                                    installed_model=self.config.model_path, on_refused=self._on_command_refused)
        self._downloader = ModelDownloader(cfg.directory, trusted, up.robot_id, lambda: self._manager.serving.number,
                                           self._on_model_ready, DownloadOptions(fleet=cfg.fleet), commands=rollback)
        self._downloader.start()
        client = make_client(f"{up.client_id or 'seg-edge-' + up.robot_id}-models", username=up.username,
                             password=up.password, password_file=up.password_file, tls=up.tls,
                             ca_file=up.ca_file, cert_file=up.cert_file, key_file=up.key_file)
        self._model_link = MqttModelLink(self._downloader, client)
        self._model_link.start(up.host, up.port, up.keepalive_s)

    def _build_engine(self, path: Path):
        c = self.config
        return load_engine(EngineConfig(str(path), self.spec, c.backend, c.cache_dir, c.device, c.threads,
                                        c.precision)).engine

    def _on_model_ready(self, manifest, path: Path) -> None:
        """A verified model file is on disk (downloader thread)."""
        want = {"num_classes": self.spec.num_classes, "input_height": self.spec.input_height,
                "input_width": self.spec.input_width, "use_depth": self.spec.use_depth}
        got = {k: manifest.spec.get(k) for k in want}
        if got != want:
            self._on_model_change(self._manager.serving, ManagerStatus(
                "rolled_back", f"model {manifest.version} is for {got}, this node runs {want}; not used"))
            return
        self._manager.offer(manifest.version, path)

    def _on_command_refused(self, message: str) -> None:
        """A rollback command was refused (downloader thread): the current model keeps serving."""
        self._on_model_change(self._manager.serving, ManagerStatus(self._manager.status.state, message))

    def _on_model_change(self, serving: ServingModel, status: ManagerStatus) -> None:
        self.model_version = serving.version
        self._publish_status(MODEL_STATES[status.state], serving.version, status.last_error)
        if status.last_error:
            self.get_logger().error(status.last_error)

    def _subscribe(self) -> None:
        cfg = self.config
        qos = qos_profile_sensor_data if cfg.input_qos == "sensor_data" else RELIABLE_OUT
        rgb_type = CompressedImage if cfg.rgb_compressed else Image
        self.create_subscription(rgb_type, cfg.rgb_topic, self._on_rgb, qos)
        self._pairer = None
        if cfg.use_depth:
            self._pairer = StampPairer(int(cfg.pair_tolerance_s * 1e9), int(cfg.pair_timeout_s * 1e9))
            self.create_subscription(Image, cfg.depth_topic, self._on_depth, qos)

    # -- callbacks: cheap, never block ------------------------------------------------
    def _on_rgb(self, msg) -> None:
        self.stats.count("rgb_received")
        if self._pairer is None:
            self._slot.put((msg, None))
            return
        pair = self._pairer.add_rgb(stamp_ns(msg.header), msg)
        if pair is not None:
            self._slot.put((pair.rgb, pair.depth))

    def _on_depth(self, msg: Image) -> None:
        self.stats.count("depth_received")
        pair = self._pairer.add_depth(stamp_ns(msg.header), msg)
        if pair is not None:
            self._slot.put((pair.rgb, pair.depth))

    # -- worker --------------------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            item = self._slot.take(timeout=0.2)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as e:  # keep serving: one bad frame must not stop the robot
                self.stats.count("processing_errors")
                self.get_logger().error(f"frame failed: {type(e).__name__}: {e}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _convert(self, rgb_msg, depth_msg):
        try:
            rgb = compressed_to_rgb(rgb_msg) if self.config.rgb_compressed else image_to_rgb(rgb_msg)
        except ImageConversionError as e:
            self.stats.count("rejected_rgb")
            self.get_logger().warning(f"dropped RGB frame from {self.config.rgb_topic}: {e}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return None
        if depth_msg is None:
            return rgb, None
        try:
            depth = image_to_depth_m(depth_msg)
        except ImageConversionError as e:
            self.stats.count("rejected_depth")
            self.get_logger().warning(f"dropped frame: depth on {self.config.depth_topic}: {e}",
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return None
        (h, w), (dh, dw) = rgb.shape[:2], depth.shape
        if abs(h * dw - w * dh) > max(h, w):  # aspect ratios differ: not registered to the colour camera
            self.stats.count("rejected_depth")
            self.get_logger().warning(
                f"dropped frame: depth is {dw}x{dh} but RGB is {w}x{h}; publish depth registered "
                "to the colour camera (e.g. aligned_depth_to_color)", throttle_duration_sec=LOG_THROTTLE_S)
            return None
        return rgb, depth

    def _process(self, rgb_msg, depth_msg) -> None:
        converted = self._convert(rgb_msg, depth_msg)
        if converted is None:
            return
        rgb, depth = converted
        result = self.pipeline.run(rgb, depth)
        if result.invalid_depth_fraction >= 1.0:
            self.stats.count("depth_all_invalid")
            self.get_logger().warning(
                "depth image has no valid pixel (all NaN, inf or 0): segmenting with depth treated as "
                "missing; check the depth camera", throttle_duration_sec=LOG_THROTTLE_S)
        elif result.invalid_depth_fraction > 0.0:
            self.stats.count("depth_frames_with_invalid_pixels")

        header = rgb_msg.header
        labels_msg = mono8_to_image(result.labels, header)
        self._labels_pub.publish(labels_msg)
        mining = result.mining
        out = SegmentationResult()
        out.header = header
        out.frame_uuid = str(uuid.uuid4())
        out.labels = labels_msg
        out.confidence = mono8_to_image(result.confidence, header)
        out.hardness_score = mining.score
        out.mining_policy = mining.policy
        out.is_hard = mining.is_hard
        out.model_version = self.model_version
        out.source = SegmentationResult.SOURCE_EDGE
        out.inference_time_ms = float(result.inference_ms)
        self._result_pub.publish(out)
        if mining.is_hard:
            self.stats.count("hard_frames")
        if mining.upload and self._uplink is not None:
            self._uplink.submit(HardFrame(
                robot_id=self.config.uplink.robot_id, frame_uuid=out.frame_uuid, stamp_ns=stamp_ns(header),
                frame_id=header.frame_id, model_version=self.model_version, mining_policy=mining.policy,
                mining_score=mining.score, rgb=rgb, depth_m=depth, edge_labels=result.labels))
        if self._overlay_pub.get_subscription_count() > 0:
            overlay = colour_overlay(rgb, result.labels, self.palette, self.config.overlay_alpha)
            self._overlay_pub.publish(rgb_to_image(overlay, header))
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns(header)) / 1e6
        self.stats.frame_done(latency_ms, result.inference_ms)

    def _on_refined(self, refined: RefinedResult) -> None:
        """Runs on the MQTT network thread: build and publish, nothing slow."""
        header = header_from(refined.stamp_ns, refined.frame_id)
        labels_msg = mono8_to_image(refined.labels, header)
        self._refined_pub.publish(labels_msg)
        out = SegmentationResult()
        out.header = header
        out.frame_uuid = refined.frame_uuid
        out.labels = labels_msg
        out.is_hard = True
        out.refiner = refined.refiner
        out.model_version = refined.edge_model_version
        out.source = SegmentationResult.SOURCE_CLOUD
        self._result_pub.publish(out)
        self.stats.count("refined_published")

    # -- status ------------------------------------------------------------------------
    def _publish_status(self, state: int, version: str, error: str = "") -> None:
        msg = ModelStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.version = version
        msg.backend = self.config.backend if hasattr(self, "config") else ""
        msg.state = state
        msg.last_error = error
        self._status_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        if self._pairer is not None:
            snap["rgb_without_depth"] = self._pairer.rgb_without_depth
            snap["depth_without_rgb"] = self._pairer.depth_without_rgb
        snap["frames_skipped_stale"] = self._slot.replaced
        if self._uplink is not None:
            snap.update({f"uplink_{k}": v for k, v in self._uplink.stats().items()})
        problems = [k for k in ("rejected_rgb", "rejected_depth", "processing_errors", "depth_all_invalid")
                    if snap.get(k)]
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: segmentation"
        status.hardware_id = self.config.backend
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = (f"serving {self.model_version}" +
                          (f"; bad input seen: {', '.join(problems)}" if problems else ""))
        values = {"backend": self.config.backend, "model_version": self.model_version,
                  **{k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in sorted(snap.items())}}
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    def stop(self) -> None:
        self._running = False
        self._slot.close()
        if hasattr(self, "_worker"):
            self._worker.join(timeout=5.0)
        if getattr(self, "_uplink", None) is not None:
            self._uplink.stop()
        if getattr(self, "_model_link", None) is not None:
            self._model_link.stop()
            self._downloader.stop()


def main(args=None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.ALL)
    node = None
    try:
        node = SegEdgeNode()
        rclpy.spin(node)
    except StartupError as e:
        print(f"[seg_edge_node] cannot start: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

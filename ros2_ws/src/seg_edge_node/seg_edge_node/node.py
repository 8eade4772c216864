"""The robot-side segmentation node: parameters, message <-> array conversion, publishers.

Everything between a camera frame and what is published is EdgeRuntime's (runtime.py,
ROS-free). Callbacks only hand stamped messages to it; a worker thread converts the
newest pair to arrays, lets the runtime segment it and publishes the result, so
inference never runs on the executor and latency never grows with a backlog.
"""
from __future__ import annotations

import logging
import sys
import threading

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from seg_msgs.msg import LabelInfo, ModelStatus, SegmentationResult, VisionClass

from .config import EdgeNodeConfig
from .image_conversion import compressed_to_rgb, image_to_depth_m, image_to_rgb, mono8_to_image, rgb_to_image
from .rejections import ImageConversionError
from .ros_adapters import RosLogHandler, descriptor
from .runtime import EdgeRuntime, FrameOutput, ModelState, RefinedOutput, StartupError

RELIABLE_OUT = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MODEL_STATES = {"loading": ModelStatus.STATE_LOADING, "serving": ModelStatus.STATE_SERVING,
                "updating": ModelStatus.STATE_UPDATING, "failed": ModelStatus.STATE_FAILED,
                "rolled_back": ModelStatus.STATE_ROLLED_BACK}
LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}


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
        defaults = EdgeNodeConfig.parameter_defaults()
        for name, default in defaults.items():
            try:
                self.declare_parameter(name, default, descriptor(name, default))
            except ParameterException as e:   # a value of the wrong type or out of its range
                raise StartupError(f"parameter {name}: {e}") from None
        config = EdgeNodeConfig.from_parameters({n: self.get_parameter(n).value for n in defaults})
        self._status_pub = self.create_publisher(ModelStatus, "~/model_status", LATCHED)
        self._labels_pub = self.create_publisher(Image, "~/labels", RELIABLE_OUT)
        self._colour_pub = self.create_publisher(Image, "~/colour_labels", RELIABLE_OUT)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", RELIABLE_OUT)
        self._result_pub = self.create_publisher(SegmentationResult, "~/result", RELIABLE_OUT)
        self._refined_pub = self.create_publisher(Image, "~/refined_labels", RELIABLE_OUT)
        self._label_info_pub = self.create_publisher(LabelInfo, "~/label_info", LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._backend = config.backend
        self.runtime = EdgeRuntime(config, on_refined=self._publish_refined, on_model_state=self._publish_status,
                                   wall_clock_ns=lambda: self.get_clock().now().nanoseconds)
        self._publish_label_info()
        qos = qos_profile_sensor_data if config.input_qos == "sensor_data" else RELIABLE_OUT
        self.create_subscription(CompressedImage if config.rgb_compressed else Image, config.rgb_topic,
                                 lambda m: self.runtime.rgb_arrived(stamp_ns(m.header), m), qos)
        if config.use_depth:
            self.create_subscription(Image, config.depth_topic,
                                     lambda m: self.runtime.depth_arrived(stamp_ns(m.header), m), qos)
        self._to_rgb = compressed_to_rgb if config.rgb_compressed else image_to_rgb
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="segmentation", daemon=True)
        self._worker.start()

    # -- worker: messages -> arrays -> runtime -> messages --------------------------------------
    def _work(self) -> None:
        while self._running:
            item = self.runtime.next_input(timeout=0.2)
            try:
                if item is not None:
                    self._process(*item)
            except Exception as e:  # noqa: BLE001 -- one bad frame must not stop the robot
                self.runtime.frame_failed(e)

    def _array(self, source: str, convert, msg):
        try:
            return convert(msg)
        except ImageConversionError as e:
            self.runtime.reject(source, e)
            return None

    def _process(self, rgb_msg, depth_msg) -> None:
        rgb = self._array("rgb", self._to_rgb, rgb_msg)
        if rgb is None:
            return
        depth = None if depth_msg is None else self._array("depth", image_to_depth_m, depth_msg)
        if depth_msg is not None and depth is None:
            return
        out = self.runtime.process(rgb, depth, stamp_ns(rgb_msg.header), rgb_msg.header.frame_id,
                                   overlay=self._overlay_pub.get_subscription_count() > 0,
                                   colour_labels=self._colour_pub.get_subscription_count() > 0)
        if out is not None:
            self._publish_frame(out, rgb_msg.header)

    def _publish_frame(self, out: FrameOutput, header) -> None:
        labels_msg = mono8_to_image(out.labels, header)
        self._labels_pub.publish(labels_msg)
        self._result_pub.publish(SegmentationResult(
            header=header, frame_uuid=out.frame_uuid, labels=labels_msg,
            confidence=mono8_to_image(out.confidence, header), hardness_score=out.hardness_score,
            mining_policy=out.mining_policy, is_hard=out.is_hard, model_version=out.model_version,
            source=SegmentationResult.SOURCE_EDGE, inference_time_ms=out.inference_ms))
        if out.colour_labels is not None:
            self._colour_pub.publish(rgb_to_image(out.colour_labels, header))
        if out.overlay is not None:
            self._overlay_pub.publish(rgb_to_image(out.overlay, header))

    def _publish_refined(self, refined: RefinedOutput) -> None:
        """Runs on the MQTT network thread: build and publish, nothing slow."""
        header = header_from(refined.stamp_ns, refined.frame_id)
        labels_msg = mono8_to_image(refined.labels, header)
        self._refined_pub.publish(labels_msg)
        self._result_pub.publish(SegmentationResult(
            header=header, frame_uuid=refined.frame_uuid, labels=labels_msg, is_hard=True, refiner=refined.refiner,
            model_version=refined.model_version, source=SegmentationResult.SOURCE_CLOUD))

    # -- status, parameters, diagnostics ---------------------------------------------------------
    def _publish_status(self, state: ModelState) -> None:
        msg = ModelStatus(version=state.version, backend=self._backend, state=MODEL_STATES[state.state],
                          last_error=state.error)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    def _publish_label_info(self) -> None:
        msg = LabelInfo(threshold=0.0, class_map=[VisionClass(class_id=i, class_name=name)
                                                  for i, name in enumerate(self.runtime.classes.names)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._label_info_pub.publish(msg)

    def _on_set_parameters(self, params) -> SetParametersResult:
        reason = self.runtime.apply_live({p.name: p.value for p in params})
        return SetParametersResult(successful=not reason, reason=reason)

    def _publish_diagnostics(self) -> None:
        health = self.runtime.health()
        status = DiagnosticStatus(name=f"{self.get_name()}: segmentation", hardware_id=self._backend,
                                  level=LEVELS[health.level], message=health.message,
                                  values=[KeyValue(key=k, value=v) for k, v in health.values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def stop(self) -> None:
        self._running = False
        if hasattr(self, "runtime"):
            self.runtime.stop()
        if hasattr(self, "_worker"):
            self._worker.join(timeout=5.0)


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

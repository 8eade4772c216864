"""Record what the segmentation node publishes: labels, latency, diagnostics.

Runs as its own process (like any consumer of the node would) and writes
  <out>.npz : stamps_ns, received_ns and, unless --no-labels, the label images;
              refined_stamps_ns and refined_labels (~/refined_labels from the cloud)
  <out>.json: counts, latency percentiles (receipt time - camera stamp), the last
              diagnostics key/values, how many overlay images arrived, and every
              ~/result message's metadata (uuid, source, mining decision, refiner).

  python -m seg_harness.result_recorder --out run/labels --count 100 [--ros-args ...]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from seg_msgs.msg import SegmentationResult

from seg_edge_node.image_conversion import image_to_rgb
from seg_edge_node.ros_args import split_ros_args

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def _pixels(msg: Image) -> np.ndarray:
    """mono8 image -> (H, W) uint8, dropping row padding."""
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width].copy()


class ResultRecorder(Node):
    def __init__(self, args: argparse.Namespace):
        super().__init__("result_recorder")
        self.args = args
        self.stamps: list[int] = []
        self.received: list[int] = []
        self.labels: list[np.ndarray] = []
        self.diagnostics: dict[str, str] = {}
        self.overlays = 0
        self.overlay_encoding = ""
        self.last_overlay: Image | None = None
        self.results: list[dict] = []
        self.refined_stamps: list[int] = []
        self.refined_labels: list[np.ndarray] = []
        self.create_subscription(Image, args.labels_topic, self._on_labels, RELIABLE)
        node_ns = "/" + args.node_name
        self.create_subscription(SegmentationResult, f"{node_ns}/result", self._on_result, RELIABLE)
        self.create_subscription(Image, f"{node_ns}/refined_labels", self._on_refined, RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        if args.overlay_topic:
            self.create_subscription(Image, args.overlay_topic, self._on_overlay, RELIABLE)

    def _on_labels(self, msg: Image) -> None:
        self.received.append(time.time_ns())
        self.stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        if not self.args.no_labels:
            self.labels.append(_pixels(msg))

    def _on_result(self, msg: SegmentationResult) -> None:
        self.results.append({
            "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
            "frame_uuid": msg.frame_uuid, "source": "cloud" if msg.source == msg.SOURCE_CLOUD else "edge",
            "is_hard": msg.is_hard, "hardness_score": msg.hardness_score, "mining_policy": msg.mining_policy,
            "model_version": msg.model_version, "refiner": msg.refiner, "received_ns": time.time_ns()})

    def _on_refined(self, msg: Image) -> None:
        self.refined_stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        self.refined_labels.append(_pixels(msg))

    def _on_overlay(self, msg: Image) -> None:
        self.overlays += 1
        self.overlay_encoding = msg.encoding
        self.last_overlay = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self.args.node_name):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics["_level"] = str(int.from_bytes(status.level, "little")
                                                 if isinstance(status.level, bytes) else status.level)
                self.diagnostics["_message"] = status.message

    def summary(self) -> dict:
        lat = (np.array(self.received) - np.array(self.stamps)) / 1e6 if self.stamps else np.array([])
        pct = {f"latency_ms_p{p}": float(np.percentile(lat, p)) for p in (50, 95, 99)} if lat.size else {}
        span = (self.received[-1] - self.received[0]) / 1e9 if len(self.received) > 1 else 0.0
        return {"labels_received": len(self.stamps), "rate_hz": (len(self.received) - 1) / span if span else 0.0,
                **pct, "overlays_received": self.overlays, "overlay_encoding": self.overlay_encoding,
                "refined_received": len(self.refined_stamps), "diagnostics": self.diagnostics,
                "results": self.results}

    def save(self) -> None:
        arrays = {"stamps_ns": np.array(self.stamps, np.int64), "received_ns": np.array(self.received, np.int64)}
        if self.labels and len({lab.shape for lab in self.labels}) == 1:
            arrays["labels"] = np.stack(self.labels)
        arrays["refined_stamps_ns"] = np.array(self.refined_stamps, np.int64)
        if self.refined_labels and len({lab.shape for lab in self.refined_labels}) == 1:
            arrays["refined_labels"] = np.stack(self.refined_labels)
        np.savez_compressed(self.args.out + ".npz", **arrays)
        with open(self.args.out + ".json", "w") as f:
            json.dump(self.summary(), f, indent=1)
        if self.args.overlay_png and self.last_overlay is not None:
            rgb = image_to_rgb(self.last_overlay)
            cv2.imwrite(self.args.overlay_png, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--node-name", default="seg_edge_node")
    p.add_argument("--labels-topic", default="/seg_edge_node/labels")
    p.add_argument("--overlay-topic", default="", help="also count overlay images on this topic")
    p.add_argument("--overlay-png", default="", help="save the last overlay image to this PNG file")
    p.add_argument("--count", type=int, default=0, help="stop after this many label images (0 = never)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = never)")
    p.add_argument("--linger", type=float, default=0.0,
                   help="after --count, keep listening this long (e.g. for one more diagnostics message)")
    p.add_argument("--no-labels", action="store_true", help="keep only stamps and latency")
    p.add_argument("--wait-publishers", type=float, default=30.0,
                   help="seconds to wait for the node's publishers before saying 'recorder ready'")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, ros_args = split_ros_args(argv)
    args = parse_args(own)
    rclpy.init(args=["result_recorder"] + ros_args)
    node = ResultRecorder(args)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    # Say when the node's publishers are matched, so a camera started after this line is
    # not segmented before the recorder listens. Matching is seen here first; the grace
    # period lets the publisher side finish discovery too.
    ready_by = time.monotonic() + args.wait_publishers
    while rclpy.ok() and time.monotonic() < ready_by and node.count_publishers(args.labels_topic) == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    grace_end = time.monotonic() + 0.5
    while rclpy.ok() and time.monotonic() < grace_end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("recorder ready" if node.count_publishers(args.labels_topic) else
          f"recorder: no publisher on {args.labels_topic} yet; recording anyway", flush=True)
    t_end = time.monotonic() + args.duration if args.duration else float("inf")
    try:
        while rclpy.ok() and not stop["now"] and time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.1)
            if args.count and len(node.stamps) >= args.count:
                linger_end = time.monotonic() + args.linger
                while time.monotonic() < linger_end:
                    rclpy.spin_once(node, timeout_sec=0.1)
                break
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, or SIGINT caught by rclpy
        pass
    finally:
        node.save()
        print(json.dumps({k: v for k, v in node.summary().items() if k not in ("diagnostics", "results")}))
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

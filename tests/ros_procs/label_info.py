"""Subscribes, as a late joiner, to the node's ~/label_info (transient local) and waits for
one ~/colour_labels image; prints both as JSON.

    python tests/ros_procs/label_info.py [NODE_NAME]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from seg_msgs.msg import LabelInfo

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def main() -> int:
    node_name = sys.argv[1] if len(sys.argv) > 1 else "seg_edge_node"
    rclpy.init()
    node = Node("label_info_reader")
    got: dict = {}

    def on_info(msg: LabelInfo) -> None:
        got["label_info"] = {"threshold": msg.threshold, "frame_id": msg.header.frame_id,
                             "class_map": [[c.class_id, c.class_name] for c in msg.class_map]}

    def on_colour(msg: Image) -> None:
        pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 3]
        got["colour_labels"] = {"encoding": msg.encoding, "width": msg.width, "height": msg.height,
                                "stamp_ns": msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                                "colours": np.unique(pixels.reshape(-1, 3), axis=0).tolist()}

    node.create_subscription(LabelInfo, f"/{node_name}/label_info", on_info, LATCHED)
    node.create_subscription(Image, f"/{node_name}/colour_labels", on_colour, 5)
    print("label info reader ready", flush=True)
    deadline = time.monotonic() + 60
    while rclpy.ok() and len(got) < 2 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps(got))
    node.destroy_node()
    rclpy.shutdown()
    return 0 if len(got) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())

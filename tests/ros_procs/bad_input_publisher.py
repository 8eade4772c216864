"""Publishes a scripted sequence of bad camera input, one case at a time.

Each case is followed by a pause so the node's keep-latest worker handles it
before the next arrives. Stamps are real time. Prints the case names it sent.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_edge_node.image_conversion import rgb_to_image
from seg_harness.synthetic_camera import depth_to_16uc1, synthetic_frame

W, H = 320, 240
PAUSE_S = 0.8


def raw(header, encoding, width, height, step, data, bigendian=0):
    msg = Image(header=header, encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian)
    msg.data = bytes(data)
    return msg


def main() -> int:
    rclpy.init()
    node = Node("bad_input_publisher")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    rgb_pub = node.create_publisher(Image, "/camera/color/image_raw", qos)
    depth_pub = node.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", qos)
    deadline = time.monotonic() + 30
    while (rgb_pub.get_subscription_count() == 0 or depth_pub.get_subscription_count() == 0) \
            and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    rgb, depth = synthetic_frame(0, H, W)

    def header():
        h = Image().header
        h.stamp = node.get_clock().now().to_msg()
        h.frame_id = "camera"
        return h

    def good_depth(h):
        return depth_to_16uc1(depth, h)

    cases = {
        "rgb_unsupported_encoding": lambda h: (raw(h, "yuv422", W, H, W * 2, bytes(W * H * 2)), good_depth(h)),
        "rgb_data_shorter_than_step_x_height": lambda h: (raw(h, "rgb8", W, H, W * 3, bytes(W * 3 * (H - 1))), good_depth(h)),
        "rgb_step_smaller_than_row": lambda h: (raw(h, "rgb8", W, H, W * 2, bytes(W * 2 * H)), good_depth(h)),
        "rgb_1x1": lambda h: (raw(h, "rgb8", 1, 1, 3, bytes(3)), depth_to_16uc1(np.ones((1, 1), np.float32), h)),
        "depth_unsupported_encoding": lambda h: (rgb_to_image(rgb, h), raw(h, "rgb8", W, H, W * 3, bytes(W * H * 3))),
        "depth_other_aspect_ratio": lambda h: (rgb_to_image(rgb, h), depth_to_16uc1(np.ones((100, 300), np.float32), h)),
        "depth_without_rgb": lambda h: (None, good_depth(h)),
        "depth_all_nan": lambda h: (rgb_to_image(rgb, h),
                                    raw(h, "32FC1", W, H, W * 4, np.full((H, W), np.nan, "<f4").tobytes())),
        "depth_all_zero": lambda h: (rgb_to_image(rgb, h), depth_to_16uc1(np.zeros((H, W), np.float32), h)),
        "good_frame": lambda h: (rgb_to_image(rgb, h), good_depth(h)),
    }
    for name, make in cases.items():
        rgb_msg, depth_msg = make(header())
        if depth_msg is not None:
            depth_pub.publish(depth_msg)
        if rgb_msg is not None:
            rgb_pub.publish(rgb_msg)
        print(name, flush=True)
        end = time.monotonic() + PAUSE_S
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

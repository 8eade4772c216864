"""A synthetic RGB-D camera: a stand-in for a real camera in demos, tests and benchmarks.

Publishes generated frames (sky, a ground plane with perspective depth, boxes
that move with the frame index, sensor noise) as sensor_msgs/Image rgb8 (or a
PNG/JPEG CompressedImage) plus 16UC1 millimetre depth with the same stamp.
Frames are a pure function of (index, size, seed), so a checker can rebuild
exactly what was sent; `--stamp-log` records which index went out with which stamp.

  python -m seg_harness.synthetic_camera --rate 30 --count 300 [--ros-args ...]
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from seg_edge_node.image_conversion import rgb_to_image
from seg_edge_node.ros_args import split_ros_args

CAMERA_HEIGHT_M = 0.5     # a robot dog's camera
FOCAL_FRACTION = 0.9      # focal length in units of image width


def synthetic_frame(index: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H,W,3) uint8, depth (H,W) float32 metres; 0 where there is no return, e.g. sky)."""
    rng = np.random.default_rng([seed, index])
    horizon = int(height * 0.42)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    focal = FOCAL_FRACTION * width
    rgb = np.empty((height, width, 3), np.float32)
    depth = np.zeros((height, width), np.float32)
    # Sky: a vertical blue gradient, no depth return.
    sky = yy < horizon
    rgb[sky] = np.stack([110 + 60 * yy[sky] / horizon, 150 + 50 * yy[sky] / horizon,
                         np.full(sky.sum(), 230.0)], -1)
    # Ground: road in the middle, sidewalk stripes at the sides, depth from the plane.
    ground = ~sky
    rows = np.maximum(yy - horizon, 1.0)
    depth[ground] = (CAMERA_HEIGHT_M * focal / rows)[ground]
    road = ground & (np.abs(xx - width / 2) < (yy - horizon) * 1.1)
    rgb[ground] = (150, 140, 130)
    rgb[road] = (90, 90, 95)
    # Boxes (buildings, cars) sliding sideways with the frame index.
    for k in range(3):
        cx = (width * (0.2 + 0.3 * k) + 7 * index * (k + 1)) % width
        w2, top = width * 0.08 * (k + 1), horizon - height * 0.12 * (k + 1)
        box = (np.abs(xx - cx) < w2) & (yy > top) & (yy < horizon + height * 0.1)
        rgb[box] = (60 + 60 * k, 70 + 30 * k, 80)
        depth[box] = 4.0 + 3.0 * k
    rgb += rng.normal(0.0, 6.0, rgb.shape).astype(np.float32)
    depth[depth > 0] += rng.normal(0.0, 0.01, int((depth > 0).sum())).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8), np.clip(depth, 0, 60.0)


def depth_to_16uc1(depth_m: np.ndarray, header) -> Image:
    mm = np.round(depth_m * 1000.0).astype("<u2")
    msg = Image(header=header, height=mm.shape[0], width=mm.shape[1], encoding="16UC1",
                is_bigendian=0, step=mm.shape[1] * 2)
    msg.data = mm.tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, header, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"cv2 could not encode {fmt}")
    msg = CompressedImage(header=header, format=fmt)
    msg.data = buf.tobytes()
    return msg


class SyntheticCamera(Node):
    def __init__(self, args: argparse.Namespace):
        super().__init__("synthetic_camera")
        self.args = args
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        rgb_type = CompressedImage if args.compressed else Image
        self.rgb_pub = self.create_publisher(rgb_type, args.rgb_topic, qos)
        self.depth_pub = self.create_publisher(Image, args.depth_topic, qos) if not args.no_depth else None
        self.frames = [synthetic_frame(i, args.height, args.width, args.seed) for i in range(args.distinct)]
        self.sent = 0
        self.stamp_log = open(args.stamp_log, "w") if args.stamp_log else None

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        pubs = [p for p in (self.rgb_pub, self.depth_pub) if p is not None]
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return False

    def publish_frame(self) -> None:
        index = self.sent % len(self.frames)
        rgb, depth = self.frames[index]
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self.args.frame_id
        if self.args.compressed:
            self.rgb_pub.publish(rgb_to_compressed(rgb, header, self.args.compressed))
        else:
            self.rgb_pub.publish(rgb_to_image(rgb, header))
        if self.depth_pub is not None:
            self.depth_pub.publish(depth_to_16uc1(depth, header))
        if self.stamp_log:
            self.stamp_log.write(f"{header.stamp.sec * 1_000_000_000 + header.stamp.nanosec} {index}\n")
            self.stamp_log.flush()
        self.sent += 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rgb-topic", default="/camera/color/image_raw")
    p.add_argument("--depth-topic", default="/camera/aligned_depth_to_color/image_raw")
    p.add_argument("--no-depth", action="store_true", help="publish RGB only")
    p.add_argument("--compressed", choices=["png", "jpeg"], help="publish RGB as CompressedImage")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--rate", type=float, default=30.0, help="frames per second")
    p.add_argument("--count", type=int, default=0, help="frames to send, 0 = until interrupted")
    p.add_argument("--distinct", type=int, default=16, help="distinct frames generated, then cycled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame-id", default="camera_color_optical_frame")
    p.add_argument("--stamp-log", help="write 'stamp_ns frame_index' per published frame")
    p.add_argument("--wait-subscribers", type=float, default=30.0,
                   help="seconds to wait for a subscriber before publishing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, ros_args = split_ros_args(argv)
    args = parse_args(own)
    rclpy.init(args=["synthetic_camera"] + ros_args)
    node = SyntheticCamera(args)
    try:
        if not node.wait_for_subscribers(args.wait_subscribers):
            print("synthetic_camera: nobody subscribed to the camera topics; is the node running?",
                  file=sys.stderr)
            return 1
        period = 1.0 / args.rate
        next_t = time.monotonic()
        while rclpy.ok() and (args.count == 0 or node.sent < args.count):
            node.publish_frame()
            next_t += period
            rclpy.spin_once(node, timeout_sec=max(0.0, next_t - time.monotonic()))
            # spin_once returns early when there is work; sleep the rest of the period.
            time.sleep(max(0.0, next_t - time.monotonic()))
        time.sleep(0.5)   # let reliable deliveries of the last frames complete
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, or SIGINT caught by rclpy
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record topics into a rosbag2 (MCAP or sqlite3), like `ros2 bag record`.

Messages are taken as serialized bytes (raw subscriptions), so recording never
deserializes, and stored with their receive time (the node clock) as bag time.
SIGINT or SIGTERM (or --duration / --count) ends the recording and finalizes
the bag, so it is readable afterwards.

  python -m seg_edge_node.bag_record --out out.mcap --topics /seg_edge_node/labels \
      /seg_edge_node/result /ground_truth/labels [--types /my/topic=pkg/msg/Type ...]
      [--storage mcap|sqlite3] [--duration S] [--count N [--count-topic T]] [--ros-args ...]

A topic's type comes from --types, else from a built-in table keyed by the
topic's last name component (listed by --help), which covers the node's outputs
and the camera topics.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from .bag_io import STORAGES, BagError, BagWriter, message_class, normalize_type, open_writer
from .ros_args import split_ros_args

IMAGE = "sensor_msgs/msg/Image"
BUILTIN_TYPES = {
    "labels": IMAGE,            # ~/labels and /ground_truth/labels
    "refined_labels": IMAGE,
    "overlay": IMAGE,
    "result": "seg_msgs/msg/SegmentationResult",
    "model_status": "seg_msgs/msg/ModelStatus",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "image_raw": IMAGE,
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "clock": "rosgraph_msgs/msg/Clock",
}
# The node publishes its model status latched (transient local); subscribing the same
# way records the status it published before the recorder started.
LATCHED = {"model_status"}


def resolve_types(topics: list[str], explicit: list[str]) -> dict[str, str]:
    """topic -> 'pkg/msg/Type' from `topic=pkg/msg/Type` entries, else the built-in table."""
    given = {}
    for entry in explicit:
        topic, sep, msgtype = entry.partition("=")
        if not sep or not topic or not msgtype:
            raise BagError(f"--types entry {entry!r} is not topic=pkg/msg/Type")
        if topic not in topics:
            raise BagError(f"--types names {topic}, which is not in --topics")
        given[topic] = normalize_type(msgtype)
    types = {}
    for topic in topics:
        msgtype = given.get(topic) or BUILTIN_TYPES.get(topic.rstrip("/").rsplit("/", 1)[-1])
        if msgtype is None:
            raise BagError(f"unknown type for topic {topic}; pass --types {topic}=pkg/msg/Type (known by name: "
                           f"{', '.join(BUILTIN_TYPES)})")
        types[topic] = msgtype
    return types


class BagRecorder(Node):
    """Raw subscriptions that append each message's bytes to `bag` on arrival."""

    def __init__(self, bag: BagWriter, types: dict[str, str], depth: int):
        super().__init__("bag_record")
        self.bag = bag
        self.names = {}  # topic as given -> fully resolved name, which is what the bag stores
        for topic, msgtype in types.items():
            name = self.names[topic] = self.resolve_topic_name(topic)
            bag.add_topic(name, msgtype)
            latched = name.rsplit("/", 1)[-1] in LATCHED
            qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.create_subscription(message_class(msgtype), name, self._writer_for(name), qos, raw=True)

    def _writer_for(self, name: str):
        def on_message(data: bytes) -> None:
            self.bag.write(name, self.get_clock().now().nanoseconds, data)
        return on_message

    def count(self, topic: str) -> int:
        return self.bag.counts[self.names[topic]]


def parse_args(argv):
    table = "".join(f"  {name:<15} {msgtype}\n" for name, msgtype in BUILTIN_TYPES.items())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="types known by the topic's last name component:\n" + table)
    p.add_argument("--out", required=True,
                   help="bag to create: a .mcap or .db3 file, or a bag directory for any other name")
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--types", nargs="+", default=[], metavar="TOPIC=TYPE",
                   help="types of topics the built-in table does not know, e.g. /odom=nav_msgs/msg/Odometry")
    p.add_argument("--storage", choices=list(STORAGES),
                   help="bag storage (default: from the --out suffix, else mcap)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: never)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N messages on --count-topic")
    p.add_argument("--count-topic", help="topic counted by --count (default: the first of --topics)")
    p.add_argument("--qos-depth", type=int, default=100,
                   help="history depth of the reliable subscriptions (deep, so bursts are not dropped)")
    args = p.parse_args(argv)
    if args.qos_depth < 1:
        p.error(f"--qos-depth must be >= 1, got {args.qos_depth}")
    args.count_topic = args.count_topic or args.topics[0]
    if args.count_topic not in args.topics:
        p.error(f"--count-topic {args.count_topic} is not one of --topics")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, ros_args = split_ros_args(argv)
    args = parse_args(own)
    # Our own handlers, installed before the bag exists: a signal only sets a flag, and
    # the loop below ends and closes the bag.
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    try:
        types = resolve_types(args.topics, args.types)
        for msgtype in types.values():
            message_class(msgtype)  # fail before creating the bag, not after
        bag = open_writer(args.out, args.storage)
    except BagError as e:
        print(f"bag_record: {e}", file=sys.stderr)
        return 1
    rclpy.init(args=["bag_record"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    start = time.monotonic()
    deadline = start + args.duration if args.duration > 0 else float("inf")
    node = None
    try:
        node = BagRecorder(bag, types, args.qos_depth)
        print(f"bag_record: recording {', '.join(node.names.values())} to {args.out} ({bag.storage})", flush=True)
        while not stop and time.monotonic() < deadline and not (
                args.count and node.count(args.count_topic) >= args.count):
            rclpy.spin_once(node, timeout_sec=0.1)
    except BagError as e:
        print(f"bag_record: {e}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        bag.close()
        rclpy.shutdown()
        print(json.dumps({"bag": args.out, "storage": bag.storage, "messages": bag.counts,
                          "seconds": round(time.monotonic() - start, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

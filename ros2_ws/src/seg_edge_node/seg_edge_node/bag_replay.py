"""Play a rosbag2 (MCAP or sqlite3) into the live ROS graph, like `ros2 bag play`.

Messages go out on their recorded topics with the bag's relative timing (its
log times) scaled by --rate. By default headers are re-stamped to the current
time, so the node's latency (receipt - stamp) means something; the mapping is
one function of the original stamp, so messages that shared a stamp in the bag
(a camera frame and its ground-truth labels) share the new one too.

  python -m seg_edge_node.bag_replay run.mcap [--rate 1.0] [--no-restamp] [--clock]
      [--topics T ...] [--wait-subscribers 30] [--wait-topics T ...] [--ros-args ...]

--rate 0 publishes as fast as the subscribers' DDS readers acknowledge each
message (no transport loss; a subscriber whose callback is slower than that
and has a shallow queue can still drop). Prints a JSON summary at the end.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from .bag_io import BagError, bag_topics, from_cdr, message_class, open_reader
from .ros_args import split_ros_args

CAMERA_IMAGE_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}
# How long one publish may wait for acknowledgements (--rate 0, and at the end) before
# replay moves on: a subscriber that vanished must not stall it forever.
ACK_TIMEOUT = Duration(seconds=5)
# DDS discovery is asymmetric: our publisher can see a subscription ~0.1 s before the
# subscriber has matched our publisher. Messages sent in that gap arrived up to 110 ms
# late (reliable repair) in the tests, and a best-effort subscriber (the node's
# sensor_data QoS) loses them; so playing starts this long after the subscribers appear.
SETTLE_S = 0.5


def header_paths(msg_class, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Attribute paths of every std_msgs/Header in a message, nested messages included
    (e.g. SegmentationResult: header, labels.header, confidence.header); not inside arrays."""
    paths = []
    for name, ftype in msg_class.get_fields_and_field_types().items():
        if ftype == "std_msgs/Header":
            paths.append((*prefix, name))
        elif "/" in ftype and "<" not in ftype and "[" not in ftype:
            paths += header_paths(message_class(ftype), (*prefix, name))
    return paths


class Restamper:
    """Original stamp -> the current time when that stamp is first seen.

    Equal originals get equal new stamps (within the last `memory` distinct ones,
    far more than the topics of one frame); new stamps strictly increase, so
    distinct frames never collide.
    """

    def __init__(self, now_ns, memory: int = 1024):
        self._now_ns = now_ns
        self._memory = memory
        self._map: OrderedDict[int, int] = OrderedDict()
        self._last = 0

    def __call__(self, stamp_ns: int) -> int:
        new = self._map.get(stamp_ns)
        if new is None:
            new = self._last = max(self._now_ns(), self._last + 1)
            self._map[stamp_ns] = new
            if len(self._map) > self._memory:
                self._map.popitem(last=False)
        return new


@dataclass
class ReplayStats:
    counts: dict[str, int] = field(default_factory=dict)
    first_wall: dict[str, float] = field(default_factory=dict)
    last_wall: dict[str, float] = field(default_factory=dict)
    bag_span_ns: tuple[int, int] | None = None

    def add(self, topic: str, bag_ns: int, wall: float) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.first_wall.setdefault(topic, wall)
        self.last_wall[topic] = wall
        first = self.bag_span_ns[0] if self.bag_span_ns else bag_ns
        self.bag_span_ns = (first, bag_ns)

    def summary(self) -> dict:
        """Messages per topic, achieved rate per topic (publish times) and the speed-up."""
        rates = {t: round((n - 1) / (self.last_wall[t] - self.first_wall[t]), 2)
                 for t, n in self.counts.items() if n > 1 and self.last_wall[t] > self.first_wall[t]}
        wall = max(self.last_wall.values(), default=0.0) - min(self.first_wall.values(), default=0.0)
        bag = (self.bag_span_ns[1] - self.bag_span_ns[0]) / 1e9 if self.bag_span_ns else 0.0
        return {"messages": self.counts, "rate_hz": rates, "wall_s": round(wall, 3), "bag_s": round(bag, 3),
                "speed": round(bag / wall, 2) if wall > 0 else None}


class BagReplayer:
    """Publishes a bag's messages from `node`; use wait_for_subscribers, then play, then close."""

    def __init__(self, node: Node, bag, *, rate: float = 1.0, restamp: bool = True, clock: bool = False,
                 topics: list[str] | None = None, qos_depth: int = 10):
        if rate < 0:
            raise BagError(f"rate must be >= 0 (0 = as fast as subscribers take them), got {rate}")
        if clock and restamp:
            raise BagError("/clock carries the bag's time, so re-stamped headers would not match it; "
                           "replay with --clock and --no-restamp")
        self.rate, self.restamp = rate, restamp
        with ExitStack() as stack:  # closes the bag again if anything below fails
            self._reader = stack.enter_context(open_reader(bag))
            available = bag_topics(self._reader)
            unknown = sorted(set(topics or ()) - set(available))
            if unknown:
                raise BagError(f"topic(s) {', '.join(unknown)} are not in {bag}; "
                               f"it has: {', '.join(sorted(available))}")
            self.topics = {t: ty for t, ty in available.items() if not topics or t in topics}
            self._classes = {t: message_class(ty) for t, ty in self.topics.items()}
            self._stack = stack.pop_all()
        self._connections = [c for c in self._reader.connections if c.topic in self.topics]
        qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._pubs = {t: node.create_publisher(cls, t, qos) for t, cls in self._classes.items()}
        # --rate 0 flow control: publish a history's worth (qos_depth) of messages on a topic,
        # then wait for the subscribers' acknowledgements, so KEEP_LAST never overwrites a
        # message not yet received. Fast DDS asks for acknowledgements with each write once
        # the history is full, else only every 3 s (its heartbeat period): waiting after
        # every message took those 3 s per message here.
        self._qos_depth = qos_depth
        self._in_flight = dict.fromkeys(self._pubs, 0)
        # Classes without a header are republished as the bag's bytes, never deserialized.
        self._headers = {t: header_paths(cls) if restamp else [] for t, cls in self._classes.items()}
        self._clock_pub = node.create_publisher(Clock, "/clock", qos) if clock else None
        self._restamper = Restamper(lambda: node.get_clock().now().nanoseconds)
        self.stats = ReplayStats()

    def camera_topics(self) -> list[str]:
        return [t for t, ty in self.topics.items() if t.startswith("/camera/") and ty in CAMERA_IMAGE_TYPES]

    def wait_for_subscribers(self, topics: list[str], timeout_s: float) -> list[str]:
        """Wait until each topic has a subscriber (then SETTLE_S more); returns those still without one."""
        unknown = sorted(set(topics) - set(self._pubs))
        if unknown:
            raise BagError(f"cannot wait for subscribers on {', '.join(unknown)}: not replayed from this bag")
        deadline = time.monotonic() + timeout_s
        while missing := [t for t in topics if self._pubs[t].get_subscription_count() == 0]:
            if time.monotonic() >= deadline:
                return missing
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        return []

    def play(self) -> ReplayStats:
        start_wall, bag_start, last_clock = time.monotonic(), None, None
        for connection, bag_ns, data in self._reader.messages(self._connections):
            if bag_start is None:
                bag_start = bag_ns
            if self.rate > 0:
                delay = start_wall + (bag_ns - bag_start) / 1e9 / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if self._clock_pub is not None and bag_ns != last_clock:
                self._publish_clock(bag_ns)
                last_clock = bag_ns
            topic = connection.topic
            self._pubs[topic].publish(self._prepare(topic, data))
            if self.rate == 0:
                self._in_flight[topic] += 1
                if self._in_flight[topic] == self._qos_depth:
                    self._pubs[topic].wait_for_all_acked(ACK_TIMEOUT)
                    self._in_flight[topic] = 0
            self.stats.add(topic, bag_ns, time.monotonic())
        # Reliable delivery of the last messages finishes before the caller exits.
        for pub in self._pubs.values():
            pub.wait_for_all_acked(ACK_TIMEOUT)
        return self.stats

    def _prepare(self, topic: str, data):
        paths = self._headers[topic]
        if not paths:
            return bytes(data)
        msg = from_cdr(data, self._classes[topic])
        for path in paths:
            header = msg
            for name in path:
                header = getattr(header, name)
            old = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
            if old:  # a zero stamp means "not set"; keep it that way
                header.stamp.sec, header.stamp.nanosec = divmod(self._restamper(old), 1_000_000_000)
        return msg

    def _publish_clock(self, bag_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, 1_000_000_000)
        self._clock_pub.publish(msg)

    def close(self) -> None:
        self._stack.close()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="bag directory, or a single .mcap / .db3 file")
    p.add_argument("--rate", type=float, default=1.0,
                   help="speed factor: 1 real time, 2 twice as fast, 0 as fast as subscribers take them")
    p.add_argument("--restamp", action=argparse.BooleanOptionalAction, default=None,
                   help="set header stamps to the current time (default: on, off with --clock)")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag's time")
    p.add_argument("--topics", nargs="+", help="replay only these topics (default: all)")
    p.add_argument("--wait-subscribers", type=float, default=30.0, metavar="S",
                   help="wait up to S seconds for subscribers before playing (0: do not wait)")
    p.add_argument("--wait-topics", nargs="+",
                   help="topics that need a subscriber before playing (default: the replayed /camera/ images)")
    p.add_argument("--qos-depth", type=int, default=10, help="history depth of the reliable publishers")
    args = p.parse_args(argv)
    if args.qos_depth < 1:
        p.error(f"--qos-depth must be >= 1, got {args.qos_depth}")
    if args.restamp is None:
        args.restamp = not args.clock
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, ros_args = split_ros_args(argv)
    args = parse_args(own)
    # Python's own handlers: SIGINT (and SIGTERM, mapped to it) stop playing with a summary.
    rclpy.init(args=["bag_replay"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = Node("bag_replay")
    replayer = None
    try:
        replayer = BagReplayer(node, args.bag, rate=args.rate, restamp=args.restamp, clock=args.clock,
                               topics=args.topics, qos_depth=args.qos_depth)
        wait_topics = args.wait_topics or replayer.camera_topics()
        if args.wait_subscribers > 0 and wait_topics:
            missing = replayer.wait_for_subscribers(wait_topics, args.wait_subscribers)
            if missing:
                print(f"bag_replay: no subscriber on {', '.join(missing)} after {args.wait_subscribers:g} s; "
                      "is the node running in this ROS_DOMAIN_ID? (--wait-topics picks the topics to wait for)",
                      file=sys.stderr)
                return 1
        try:
            replayer.play()
        finally:  # also after Ctrl-C: what was played
            print(json.dumps({"bag": str(args.bag), **replayer.stats.summary()}), flush=True)
    except BagError as e:
        print(f"bag_replay: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, or SIGINT caught by rclpy
        pass
    finally:
        if replayer is not None:
            replayer.close()
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

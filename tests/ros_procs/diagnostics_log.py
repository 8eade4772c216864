"""Appends each of the segmentation node's /diagnostics messages to a file, one JSON
object (key -> value, plus "_received_ns", "_level" and "_message") per line, flushed at once, so a test or a
benchmark can watch counters change while the node runs.

    python tests/ros_procs/diagnostics_log.py OUT.jsonl [NODE_NAME]
"""
from __future__ import annotations

import json
import signal
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def main() -> int:
    out_path, node_name = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "seg_edge_node")
    rclpy.init()
    node = Node("diagnostics_log")
    out = open(out_path, "a")

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(node_name):
                values = {kv.key: kv.value for kv in status.values}
                values["_received_ns"] = time.time_ns()
                values["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
                    else int(status.level)
                values["_message"] = status.message
                out.write(json.dumps(values) + "\n")
                out.flush()

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    print("diagnostics log ready", flush=True)
    try:
        while rclpy.ok() and not stop["now"]:
            rclpy.spin_once(node, timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C, or SIGINT caught by rclpy
        pass
    finally:
        out.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

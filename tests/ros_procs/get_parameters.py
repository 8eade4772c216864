"""Prints, as JSON, the values of parameters of a running node (asked over its ROS service)."""
from __future__ import annotations

import json
import sys

import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python


def main() -> int:
    node_name, names = sys.argv[1], sys.argv[2:]
    rclpy.init()
    node = Node("parameter_reader")
    client = node.create_client(GetParameters, f"/{node_name}/get_parameters")
    if not client.wait_for_service(timeout_sec=20.0):
        print(f"no parameter service for {node_name}", file=sys.stderr)
        return 1
    future = client.call_async(GetParameters.Request(names=names))
    rclpy.spin_until_future_complete(node, future, timeout_sec=20.0)
    values = [parameter_value_to_python(v) for v in future.result().values]
    print(json.dumps(dict(zip(names, values))))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

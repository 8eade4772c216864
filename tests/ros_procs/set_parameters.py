"""Sets parameters of a running node one at a time over its ROS services and prints, as
JSON, each result (successful, reason) and each parameter's descriptor as the node
describes it.

    python tests/ros_procs/set_parameters.py NODE_NAME name=json_value [name=json_value ...]
"""
from __future__ import annotations

import json
import sys

import rclpy
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter


def call(node, client, request):
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=20.0)
    return future.result()


def main() -> int:
    node_name, assignments = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    rclpy.init()
    node = Node("parameter_setter")
    setter = node.create_client(SetParameters, f"/{node_name}/set_parameters")
    describer = node.create_client(DescribeParameters, f"/{node_name}/describe_parameters")
    if not (setter.wait_for_service(timeout_sec=20.0) and describer.wait_for_service(timeout_sec=20.0)):
        print(f"no parameter services for {node_name}", file=sys.stderr)
        return 1
    out = {"results": {}, "descriptors": {}}
    for name, text in assignments:
        param = Parameter(name, value=json.loads(text)).to_parameter_msg()
        result = call(node, setter, SetParameters.Request(parameters=[param])).results[0]
        out["results"][name] = {"successful": result.successful, "reason": result.reason}
    described = call(node, describer, DescribeParameters.Request(names=[n for n, _ in assignments]))
    for d in described.descriptors:
        out["descriptors"][d.name] = {
            "description": d.description, "read_only": d.read_only,
            "floating_point_range": [[r.from_value, r.to_value] for r in d.floating_point_range],
            "integer_range": [[r.from_value, r.to_value] for r in d.integer_range]}
    print(json.dumps(out))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

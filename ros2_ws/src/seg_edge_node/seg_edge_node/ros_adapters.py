"""Small rclpy adapters of the node: Python logging to the ROS logger, parameter descriptors."""
from __future__ import annotations

import logging

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from .parameter_info import PARAMETERS


class RosLogHandler(logging.Handler):
    """Sends the ROS-free modules' Python logging (runtime, uplink, engines) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        # One call line per severity: rclpy refuses a call site whose severity changes.
        msg = f"[{record.name}] {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            self._ros.error(msg)
        elif record.levelno >= logging.WARNING:
            self._ros.warning(msg)
        elif record.levelno >= logging.INFO:
            self._ros.info(msg)
        else:
            self._ros.debug(msg)


def descriptor(name: str, default) -> ParameterDescriptor:
    info = PARAMETERS[name]
    d = ParameterDescriptor(name=name, description=info.description, read_only=not info.live)
    if not info.live:
        d.additional_constraints = "set at start only (restart the node to change it)"
    if info.range is not None and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(info.range[0]), to_value=float(info.range[1]))]
    elif info.range is not None and isinstance(default, int) and not isinstance(default, bool):
        d.integer_range = [IntegerRange(from_value=int(info.range[0]), to_value=int(info.range[1]), step=1)]
    return d

"""Command lines of the package's tools: their own arguments, then `--ros-args ...` for rclpy."""
from __future__ import annotations


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """A tool's own arguments and, from `--ros-args` on, the ones for rclpy.init."""
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    return argv[:cut], argv[cut:]

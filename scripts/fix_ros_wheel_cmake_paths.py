#!/usr/bin/env python3
"""Point the ROS message wheels' exported CMake files at this interpreter.

The `ros-*` message wheels ship `*__rosidl_generator_pyExport.cmake` files that
hard-code the wheel builder's Python and NumPy include directories. Building an
interface package (seg_msgs) against them fails until those paths name this
venv's own. Idempotent; re-run after reinstalling any `ros-*` message wheel.
"""
import pathlib
import sys
import sysconfig

import numpy

BUILDER_PY_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_NP_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def main(prefix: str) -> int:
    replacements = {
        BUILDER_PY_INCLUDE: sysconfig.get_paths()["include"],
        BUILDER_NP_INCLUDE: numpy.get_include(),
    }
    changed = 0
    for path in pathlib.Path(prefix, "share").glob("*/cmake/*Export*.cmake"):
        text = path.read_text()
        new = text
        for old, repl in replacements.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"fix_ros_wheel_cmake_paths: rewrote {changed} file(s) under {prefix}/share")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))

"""Paths and process helpers for tests that start real ROS 2 processes."""
from __future__ import annotations

import sys
from pathlib import Path

from seg_harness.processes import (Proc, node_command, python_module, ros_env as _ros_env, wait_serving,
                                     wait_until)

ROOT = Path(__file__).resolve().parents[1]
NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
DDS_PROFILE = ROOT / "launch" / "fastdds_profile.xml"
PROCS = Path(__file__).parent / "ros_procs"

__all__ = ["NODE_EXE", "PARAMS_FILE", "Proc", "node_command", "python_module", "python_script", "ros_env",
           "wait_serving", "wait_until"]


def ros_env(tmp: Path) -> dict[str, str]:
    return _ros_env(tmp / "ros_home", DDS_PROFILE)


def python_script(name: str, *args) -> list[str]:
    return [sys.executable, str(PROCS / name), *(str(a) for a in args)]

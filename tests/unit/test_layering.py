"""The project's packages form layers: no package imports one that imports it back, the
leaf packages import nothing of the project, and only tools import the harness.

Read from the source with ast (every import, also those inside functions), so a
cycle hidden in a lazy import counts too.
"""
from __future__ import annotations

import ast
import re

from seg_edge_node.model_manager import SERVING_STATES
from test_packaging import PACKAGES, ROOT

LEAVES = {"seg_core", "segmetrics", "durable_files"}
# Test, benchmark and demo tooling: nothing of the product may import these.
TOOLS = {"seg_harness", "seg_eval"}


def imports_of(package: str) -> set[str]:
    found = set()
    for path in PACKAGES[package].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return (found & set(PACKAGES)) - {package}


def test_no_package_imports_one_that_imports_it_back():
    graph = {p: imports_of(p) for p in PACKAGES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    cycles = sorted(p for p in graph if reaches(p, p, {p}))
    assert not cycles, {p: sorted(graph[p]) for p in cycles}


def test_leaf_packages_import_nothing_of_the_project():
    assert {p: imports_of(p) for p in LEAVES} == {p: set() for p in LEAVES}


def test_product_packages_never_import_the_tools():
    product = set(PACKAGES) - TOOLS
    assert {p: imports_of(p) & TOOLS for p in product} == {p: set() for p in product}


def test_every_model_state_has_its_ros_constant():
    """The node maps its states to seg_msgs/ModelStatus by name (STATE_<NAME>)."""
    msg = (ROOT / "ros2_ws" / "src" / "seg_msgs" / "msg" / "ModelStatus.msg").read_text()
    constants = set(re.findall(r"^uint8 STATE_(\w+) = \d+", msg, flags=re.M))
    assert constants == {s.upper() for s in SERVING_STATES}

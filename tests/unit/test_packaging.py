"""What an install of the project gets: declared dependencies, the node package's installed
share/ files and console scripts, the launch file's argument logic and DDS configurations.

`ros2 launch` cannot run here (launch and launch_ros are not on PyPI), so the launch file's
decisions live in seg_edge_node.launch_support and are tested directly; the launch file
itself is checked to compile and to declare the arguments it reads.
"""
from __future__ import annotations

import ast
import importlib.metadata
import py_compile
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from seg_edge_node import launch_support

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
PACKAGES = {"rfnet": ROOT / "models" / "rfnet", "segwire": ROOT / "segwire", "cloud_bridge": ROOT / "cloud_bridge",
            "durable_files": ROOT / "durable_files", "seg_eval": ROOT / "seg_eval", "segdata": ROOT / "segdata",
            "campus_sim": ROOT / "campus_sim", "segmetrics": ROOT / "segmetrics", "seg_harness": ROOT / "seg_harness",
            "seg_edge_node": ROOT / "ros2_ws" / "src" / "seg_edge_node" / "seg_edge_node"}
# From the ROS install (or the ros-* wheels), not from pyproject.
ROS_MODULES = {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "rcl_interfaces", "rosgraph_msgs", "seg_msgs"}
# Not installed on a machine without a GPU, so not found by packages_distributions().
GPU_MODULES = {"tensorrt": "tensorrt-cu12", "pycuda": "pycuda"}


def third_party_imports(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in PACKAGES}


def requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_declares_every_imported_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) >= {"edge", "cloud", "gpu", "dev"}
    declared = {requirement_name(s) for s in project["dependencies"]}
    declared |= {requirement_name(s) for specs in extras.values() for s in specs}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for package, folder in PACKAGES.items():
        for module in third_party_imports(folder) - ROS_MODULES:
            names = GPU_MODULES.get(module) or distributions.get(module)
            names = [names] if isinstance(names, str) else names or [f"<no distribution for {module}>"]
            if not {n.lower().replace("_", "-") for n in names} & declared:
                missing.setdefault(package, []).append(f"{module} ({', '.join(names)})")
    assert not missing, missing
    # The cloud extra already has what the bridge's PostgreSQL store and metrics need.
    assert {"psycopg", "prometheus-client"} <= {requirement_name(s) for s in extras["cloud"]}


def test_package_xml_lists_the_node_imports_as_rosdep_keys():
    keys = {e.text for e in ET.parse(ROOT / "ros2_ws" / "src" / "seg_edge_node" / "package.xml").getroot()
            if e.tag == "exec_depend"}
    rosdep = {"cv2": "python3-opencv", "numpy": "python3-numpy", "yaml": "python3-yaml", "paho": "python3-paho-mqtt",
              "rosbags": "python3-rosbags-pip", "cryptography": "python3-cryptography"}
    imported = third_party_imports(PACKAGES["seg_edge_node"])
    for module in imported:
        assert (module if module in ROS_MODULES else rosdep[module]) in keys, module
    # The node also imports rfnet (torch, onnx, onnxruntime) and its launch file needs launch_ros.
    assert {"python3-torch", "python3-onnxruntime-pip", "python3-onnx-pip", "launch", "launch_ros"} <= keys


def test_setup_installs_the_launch_file_its_parameters_and_the_tools():
    share = VENV / "share" / "seg_edge_node" / "launch"
    for name in ("edge.launch.py", "edge_params.yaml", "edge_tls_params.yaml", "fastdds_profile.xml",
                 "cyclonedds.xml"):
        assert (share / name).read_bytes() == (ROOT / "launch" / name).read_bytes(), name
    for tool in ("seg_edge_node", "bag_from_dataset", "bag_replay", "bag_record"):
        exe = VENV / "lib" / "seg_edge_node" / tool
        assert exe.is_file(), tool
    done = subprocess.run([str(VENV / "lib" / "seg_edge_node" / "bag_replay"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr
    camera = subprocess.run([str(VENV / "bin" / "seg-synthetic-camera"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert camera.returncode == 0 and "--rate" in camera.stdout, camera.stderr


def test_parameter_files_apply_to_any_node_name():
    for name in ("edge_params.yaml", "edge_tls_params.yaml"):
        doc = yaml.safe_load((ROOT / "launch" / name).read_text())
        assert list(doc) == ["/**"] and "ros__parameters" in doc["/**"], name


def test_launch_file_compiles_and_declares_what_it_reads():
    path = ROOT / "launch" / "edge.launch.py"
    py_compile.compile(str(path), doraise=True)
    tree = ast.parse(path.read_text())
    arguments = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", "") == "ARGUMENTS")
    declared = {key.value for key in arguments.keys}
    read = set(launch_support.STRING_OVERRIDES) | set(launch_support.UPLINK_OVERRIDES) | {
        "use_depth", "params_file", "overlay_params_file", "namespace", "rmw", "fastdds_profile",
        "cyclonedds_config", "respawn"}
    assert declared == read
    # No rewritten temporary parameter files any more: the YAML's /** key does that job.
    assert "tempfile" not in path.read_text()


def test_launch_overrides_only_what_is_given():
    given = launch_support.parameter_overrides({"model_path": "/m.pth", "backend": "", "use_depth": "False",
                                                "robot_id": "dog1", "precision": "int8"})
    assert given == {"model_path": "/m.pth", "precision": "int8", "uplink.robot_id": "dog1",
                     "uplink.username": "dog1", "use_depth": False}
    with pytest.raises(RuntimeError, match="use_depth:='maybe': use true or false"):
        launch_support.parameter_overrides({"use_depth": "maybe"})


def test_launch_selects_the_dds_implementation_and_its_configuration():
    cyclone = ROOT / "launch" / "cyclonedds.xml"
    env = launch_support.dds_environment("cyclonedds", "", str(cyclone))
    assert env == {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "CYCLONEDDS_URI": f"file://{cyclone}"}
    fast = ROOT / "launch" / "fastdds_profile.xml"
    assert launch_support.dds_environment("fastdds", str(fast), str(cyclone)) == {
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "FASTDDS_DEFAULT_PROFILES_FILE": str(fast)}
    assert launch_support.dds_environment("fastdds", "", "")["FASTDDS_DEFAULT_PROFILES_FILE"] == ""
    with pytest.raises(RuntimeError, match="rmw:='zenoh': use fastdds or cyclonedds"):
        launch_support.dds_environment("zenoh", "", "")
    with pytest.raises(RuntimeError, match="cyclonedds_config:='/nowhere.xml': no such file"):
        launch_support.dds_environment("cyclonedds", "", "/nowhere.xml")


def test_dds_configurations_are_well_formed():
    root = ET.parse(ROOT / "launch" / "cyclonedds.xml").getroot()
    ns = "{https://cdds.io/config}"
    assert root.tag == f"{ns}CycloneDDS"
    domain = root.find(f"{ns}Domain")
    assert domain is not None and domain.get("Id") == "any"
    assert domain.find(f"{ns}Internal/{ns}SocketReceiveBufferSize").get("min") == "16MB"
    assert ET.parse(ROOT / "launch" / "fastdds_profile.xml").getroot().tag == "{http://www.eprosima.com}dds"

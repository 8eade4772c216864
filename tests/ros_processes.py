"""Start and stop the real ROS 2 processes of a test, each in its own process group."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
NODE_EXE = VENV / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
PROCS = Path(__file__).parent / "ros_procs"


def ros_env(tmp: Path) -> dict[str, str]:
    """A private DDS world: its own domain id, localhost discovery, the SHM profile."""
    env = dict(os.environ)
    env.update({
        "ROS_DOMAIN_ID": str(random.Random(os.getpid() + time.time_ns()).randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(ROOT / "launch" / "fastdds_profile.xml"),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_HOME": str(tmp / "ros_home"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.popen = subprocess.Popen([str(c) for c in cmd], env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not finish in {timeout}s; log:\n{self.log()}")

    def signal(self, sig=signal.SIGINT) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait()
        finally:
            self._log.close()


def python_module(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *args]


def python_script(name: str, *args) -> list[str]:
    return [sys.executable, str(PROCS / name), *args]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

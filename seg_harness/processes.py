"""Run the edge stack's ROS 2 programs as separate processes in a private DDS world.

Used by the demo, the benchmarks and the tests: each process gets its own
process group (so a stop reaches its children), a log file, and an
environment with its own ROS_DOMAIN_ID, localhost-only discovery and ROS_HOME.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def ros_env(ros_home: Path, dds_profile: str | None = None, domain_id: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id if domain_id is not None
                             else random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "ROS_HOME": str(ros_home),
        "PYTHONUNBUFFERED": "1",
    })
    profile = dds_profile or env.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


def node_command(executable, params_file, params: dict | None = None) -> list[str]:
    """The segmentation node's command line: a parameter file plus `-p name:=value` overrides."""
    cmd = [str(executable), "--ros-args", "--params-file", str(params_file)]
    for name, value in (params or {}).items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def python_module(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *(str(a) for a in args)]


STARTED: list["Proc"] = []   # every Proc of this interpreter, in start order


def stop_started_since(index: int) -> None:
    """Stop the processes started after STARTED[index] that still run (test teardown)."""
    for proc in reversed(STARTED[index:]):
        if proc.alive():
            proc.stop()
    del STARTED[index:]


class Proc:
    """A child process with its output in `<log_dir>/<name>.log`."""

    def __init__(self, name: str, cmd: list, env: dict, log_dir: Path):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.popen = subprocess.Popen([str(c) for c in cmd], env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} did not finish in {timeout}s; log:\n{self.log()}") from None

    def signal(self, sig: int = signal.SIGINT) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after `timeout`; returns the exit code."""
        self.signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait()
        finally:
            self._log.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_serving(node: Proc, timeout: float = 120.0) -> None:
    """Block until the node logged that it serves a model; raise if it died."""
    wait_until(lambda: "serving model" in node.log() or not node.alive(), timeout,
               "the segmentation node to load its model")
    if not node.alive():
        raise RuntimeError(f"the segmentation node exited:\n{node.log()}")

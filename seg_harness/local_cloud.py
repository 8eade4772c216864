"""Run the cloud side locally, for demos, benchmarks and tests: a private mosquitto
on a free loopback port, and bridge processes with generated configs.

The broker keeps persistence on, so messages queued for offline persistent sessions
survive a broker restart (mosquitto writes its database on a clean stop and every
`autosave_interval` seconds).
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        raise FileNotFoundError("mosquitto is not installed; run scripts/setup.sh (apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process(process: subprocess.Popen, sig: int, timeout: float) -> None:
    """`sig`, then SIGKILL if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


STARTED: list = []   # brokers and bridges of this interpreter, in start order


def stop_started_since(index: int) -> None:
    """Stop the brokers and bridges started after STARTED[index] (test teardown)."""
    for item in reversed(STARTED[index:]):
        item.stop()
    del STARTED[index:]


class LocalBroker:
    """A mosquitto with an open listener on a free loopback port (or on the addresses
    `listen`), or, with `config_path`, one run from an existing config (segwire.dev_pki's)
    that listens on `port` and logs to `directory`/mosquitto.log."""

    def __init__(self, directory: Path, port: int | None = None, extra_config: str = "",
                 config_path: Path | None = None, listen: tuple[str, ...] = ("127.0.0.1",)):
        self.listen = tuple(listen)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.directory / "mosquitto.log"
        self.process: subprocess.Popen | None = None
        if config_path is not None:
            if port is None:
                raise ValueError("LocalBroker(config_path=...) needs the port that config listens on")
            self.config_path = Path(config_path)
            return
        self.config_path = self.directory / "mosquitto.conf"
        self.config_path.write_text(
            "".join(f"listener {self.port} {address}\n" for address in self.listen) +
            # Started as root, mosquitto would switch to the "mosquitto" user and then
            # be unable to write its log and persistence database here.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 10000\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + extra_config)

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.log()}")
            try:
                socket.create_connection((self.listen[0], self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()   # the caller never gets hold of it
        raise TimeoutError(f"mosquitto did not listen on port {self.port}: {self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Clean stop (SIGTERM): mosquitto saves its persistence database first."""
        if self.process is not None:
            end_process(self.process, signal.SIGTERM, timeout)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class BridgeRunner:
    """A bridge process (`python -m cloud_bridge.service`) with a generated YAML config.

    `settings` are dotted config keys, e.g. {"broker.port": 1883, "refinement.regions.method": "slic"}.
    """

    def __init__(self, directory: Path, bridge_id: str, storage: Path, settings: dict | None = None,
                 prefix: tuple[str, ...] = ()):
        self.prefix = tuple(prefix)   # e.g. ("ip", "netns", "exec", NS): the bridge on another "host"
        self.directory = Path(directory)
        self.bridge_id = bridge_id
        self.storage = Path(storage)
        config: dict = {"bridge_id": bridge_id, "storage_dir": str(self.storage), "stats_period_s": 0.5}
        for key, value in (settings or {}).items():
            node = config
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        self.config_path = self.directory / f"{bridge_id}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = self.directory / f"{bridge_id}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "BridgeRunner":
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "cloud_bridge.service", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stats(self) -> dict:
        path = self.storage / f"stats-{self.bridge_id}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):   # not written yet, or caught mid-replace
            return {}

    def wait_subscribed(self, timeout: float = 60.0) -> None:
        """A new shared subscription gets only what is published after it exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats().get("subscribed") == 1:
                return
            if not self.alive():
                raise RuntimeError(f"bridge {self.bridge_id} exited:\n{self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"bridge {self.bridge_id} did not subscribe in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

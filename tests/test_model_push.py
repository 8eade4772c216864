"""Model push against a real mosquitto: publisher (cloud_bridge.model_push) and robot
downloader (seg_edge_node.model_download) in this process, rogue publishers beside them.

    PYTHONPATH=ros2_ws/src/seg_edge_node .venv/bin/python -m pytest tests/test_model_push.py -q
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.config import BrokerConfig
from cloud_bridge.model_push import ModelPublisher, PublishError, ServeOptions
from seg_edge_node.model_download import DownloadOptions, ModelDownloader, MqttModelLink
from segwire import (ModelChunk, decode_transfer_status, encode_chunk, make_client, model_chunk_topic,
                     model_status_topic, models_manifest_topic)
from segwire.model_manifest import build_manifest, sign_manifest

pytestmark = pytest.mark.timeout(60)

SPEC = {"num_classes": 30, "input_height": 480, "input_width": 640, "use_depth": True}
CHUNK = 64 * 1024
MODEL_BYTES = 3 * 2**20 + 12_345           # a short last chunk
CHUNKS = -(-MODEL_BYTES // CHUNK)          # 49
ROBOT = "dog-01"
KEY = Ed25519PrivateKey.generate()
TRUSTED = {"cloud-a": KEY.public_key()}


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "rfnet.onnx"
    path.write_bytes(os.urandom(MODEL_BYTES))
    return path


def publisher(broker, model_dir: Path, **options) -> ModelPublisher:
    return ModelPublisher(BrokerConfig(port=broker.port, client_id=f"publisher-{time.monotonic_ns()}"), "default",
                          model_dir, KEY, "cloud-a", ServeOptions(chunk_size=CHUNK, **options))


def started(pub: ModelPublisher) -> ModelPublisher:
    pub.start()
    assert pub.wait_subscribed(10)
    return pub


class Robot:
    """A robot's model downloader on its own MQTT connection."""

    def __init__(self, broker, directory: Path, current_version: int = 0, **options):
        self.ready: list = []
        self.downloader = ModelDownloader(
            directory, TRUSTED, ROBOT, lambda: current_version, lambda m, p: self.ready.append((m, p)),
            DownloadOptions(**{"request_timeout_s": 2.0, **options}))
        self.link = MqttModelLink(self.downloader, make_client(f"seg-model-{ROBOT}"))
        self.downloader.start()
        self.link.start("127.0.0.1", broker.port)

    @property
    def counters(self) -> dict:
        return self.downloader.status()["counters"]

    def wait_ready(self, timeout: float = 20) -> tuple:
        wait_until(lambda: self.ready, timeout, f"the model ({self.downloader.status()})")
        return self.ready[0]

    def wait_rejected(self, reason: str, timeout: float = 10) -> dict:
        wait_until(lambda: self.downloader.status()["reason"] == reason, timeout,
                   f"rejection {reason!r} ({self.downloader.status()})")
        return self.downloader.status()

    def stop(self) -> None:
        self.link.stop()        # no more messages, then the worker drains what it has
        self.downloader.stop()


class Client:
    """A plain MQTT client: a rogue publisher, or an observer of model status."""

    def __init__(self, broker, name: str, subscribe: str | None = None):
        self.messages: list = []
        self.client = make_client(name)
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (subscribe and c.subscribe(subscribe, qos=1),
                                                         connected.set())
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert connected.wait(10)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def nothing_written(directory: Path) -> bool:
    return not any(p.is_file() for p in directory.rglob("*"))


def check_installed(robot: Robot, directory: Path, model_file: Path, version: int) -> None:
    manifest, path = robot.wait_ready()
    assert manifest.version == version and manifest.chunk_count == CHUNKS
    assert path == directory / "versions" / str(version) / "model.onnx"
    assert path.read_bytes() == model_file.read_bytes()
    assert json.loads((path.parent / "manifest.json").read_bytes())["model_sha256"] == manifest.model_sha256
    assert not any((directory / "partial").iterdir())
    status = robot.downloader.status()
    assert (status["state"], status["version"], status["received"], status["total"]) == ("ready", version,
                                                                                          CHUNKS, CHUNKS)


# --- the normal cases ---------------------------------------------------------------------


def test_publish_reaches_an_online_robot(tmp_path, broker, model_file):
    pub = started(publisher(broker, tmp_path / "cloud"))
    observer = Client(broker, "observer", model_status_topic(ROBOT))
    robot = Robot(broker, tmp_path / "robot")
    try:
        wait_until(lambda: observer.messages, 10, "the robot's first model status")
        assert decode_transfer_status(observer.messages[0][1]).state == "idle"
        manifest = pub.publish(model_file, 1, SPEC, notes="first")
        assert (tmp_path / "cloud" / "1" / "model.onnx").read_bytes() == model_file.read_bytes()
        assert json.loads((tmp_path / "cloud" / "1" / "manifest.json").read_bytes())["signature"] == \
            manifest.signature
        check_installed(robot, tmp_path / "robot", model_file, 1)
        assert robot.ready[0][0] == manifest
        counters = robot.counters
        assert counters["chunks_received"] == CHUNKS and counters["chunks_rejected"] == 0
        assert pub.stats()["chunks_served"] == CHUNKS
        wait_until(lambda: decode_transfer_status(observer.messages[-1][1]).state == "ready", 10, "status ready")
        assert decode_transfer_status(observer.messages[-1][1]).version == 1
    finally:
        robot.stop()
        observer.close()
        pub.stop()


def test_a_robot_connecting_after_the_publish_gets_the_retained_manifest(tmp_path, broker, model_file):
    pub = started(publisher(broker, tmp_path / "cloud"))
    try:
        pub.publish(model_file, 1, SPEC)
        assert pub.stats()["manifests_published"] >= 1   # acknowledged by the broker
        robot = Robot(broker, tmp_path / "robot")
        try:
            check_installed(robot, tmp_path / "robot", model_file, 1)
        finally:
            robot.stop()
        # The same robot again, now running version 1: up to date, nothing fetched.
        again = Robot(broker, tmp_path / "robot", current_version=1)
        try:
            wait_until(lambda: again.counters["manifests_received"] == 1, 10, "the retained manifest")
            assert again.downloader.status()["state"] == "idle" and again.counters["requests_sent"] == 0
        finally:
            again.stop()
    finally:
        pub.stop()


def test_an_interrupted_transfer_resumes_with_only_the_missing_chunks(tmp_path, broker, model_file):
    # The first publisher serves one window of 16 chunks, then throttles the robot to a trickle.
    slow = started(publisher(broker, tmp_path / "cloud", chunks_per_s=0.2, burst_chunks=16))
    robot = Robot(broker, tmp_path / "robot")
    try:
        slow.publish(model_file, 1, SPEC)
        wait_until(lambda: robot.counters["chunks_received"] >= 16, 10, "the first window")
    finally:
        robot.stop()
        time.sleep(0.3)  # requests the robot sent before it left reach the publisher, which drops them
        slow.stop()
    partial = tmp_path / "robot" / "partial" / "1"
    on_disk = {int(p.stem) for p in partial.glob("*.chunk")}
    assert 16 <= len(on_disk) < CHUNKS and not robot.ready

    pub = started(publisher(broker, tmp_path / "cloud"))   # a restarted publisher, full speed
    resumed = Robot(broker, tmp_path / "robot")
    try:
        check_installed(resumed, tmp_path / "robot", model_file, 1)
        counters = resumed.counters
        assert counters["downloads_resumed"] == 1
        assert counters["chunks_requested"] == CHUNKS - len(on_disk)
        assert counters["chunks_received"] == CHUNKS - len(on_disk)
        assert pub.stats()["chunks_served"] == CHUNKS - len(on_disk)
    finally:
        resumed.stop()
        pub.stop()


# --- attacks and refusals -------------------------------------------------------------------


def test_a_tampered_chunk_is_rejected_and_fetched_again(tmp_path, broker, model_file):
    # The genuine manifest goes out first, with nobody serving chunks yet, so the rogue's
    # chunks are the only ones the robot sees until the publisher starts.
    pub = publisher(broker, tmp_path / "cloud")
    manifest = pub.publish(model_file, 1, SPEC)          # stored only: not connected
    rogue = Client(broker, "rogue")
    robot = Robot(broker, tmp_path / "robot", request_timeout_s=1.0)
    try:
        rogue.publish(models_manifest_topic(), manifest.to_bytes(), retain=True)
        wait_until(lambda: robot.counters["requests_sent"] >= 1, 10, "the first request")
        for index in (0, 1, CHUNKS - 1):                    # two requested, one not yet
            forged = os.urandom(manifest.chunk_length(index))
            rogue.publish(model_chunk_topic(ROBOT), encode_chunk(ModelChunk(1, index, forged)))
        wait_until(lambda: robot.counters["chunks_rejected"] == 3, 10, "the forged chunks rejected")
        assert not list((tmp_path / "robot" / "partial" / "1").glob("*.chunk"))
        assert "does not match its signed hash" in robot.downloader.status()["last_error"]
        started(pub)
        check_installed(robot, tmp_path / "robot", model_file, 1)
        assert robot.counters["chunks_rejected"] == 3 and robot.counters["re_requests"] >= 2
    finally:
        robot.stop()
        rogue.close()
        pub.stop()


@pytest.mark.parametrize("key_id, reason", [("rogue", "unknown_key"), ("cloud-a", "bad_signature")])
def test_a_manifest_from_an_untrusted_key_is_rejected(tmp_path, broker, model_file, key_id, reason):
    rogue_key = Ed25519PrivateKey.generate()
    forged = sign_manifest(build_manifest(model_file, 9, SPEC, CHUNK), rogue_key, key_id)
    rogue = Client(broker, "rogue")
    robot = Robot(broker, tmp_path / "robot")
    try:
        rogue.publish(models_manifest_topic(), forged.to_bytes(), retain=True)
        status = robot.wait_rejected(reason)
        assert status["state"] == "rejected" and status["version"] is None
        assert robot.counters["requests_sent"] == 0 and not robot.ready
        assert nothing_written(tmp_path / "robot")
    finally:
        robot.stop()
        rogue.close()


def test_a_downgrade_is_rejected(tmp_path, broker, model_file):
    pub = started(publisher(broker, tmp_path / "cloud"))
    robot = Robot(broker, tmp_path / "robot", current_version=5)
    try:
        pub.publish(model_file, 3, SPEC)
        status = robot.wait_rejected("downgrade")
        assert status["state"] == "rejected" and "older than the model in use (5)" in status["last_error"]
        assert robot.counters["requests_sent"] == 0 and pub.stats()["chunks_served"] == 0
        assert nothing_written(tmp_path / "robot")
    finally:
        robot.stop()
        pub.stop()


def test_an_oversized_manifest_is_rejected_before_parsing(tmp_path, broker):
    robot = Robot(broker, tmp_path / "robot")
    try:
        wait_until(lambda: robot.downloader.status()["state"] == "idle", 5, "the robot")
        junk = tmp_path / "manifest.json"
        junk.write_bytes(b"{" * (256 * 1024 + 1))   # malformed too: "oversized" shows it was never parsed
        # mosquitto_pub: a client nobody here wrote.
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-r", "-t", models_manifest_topic(),
                        "-f", str(junk)], check=True, timeout=30)
        status = robot.wait_rejected("oversized")
        assert "262145 bytes, above the limit 262144" in status["last_error"]
        assert nothing_written(tmp_path / "robot")
    finally:
        robot.stop()


def test_publisher_refuses_old_versions_and_keeps_its_versions_across_restarts(tmp_path, broker, model_file):
    pub = publisher(broker, tmp_path / "cloud")
    pub.publish(model_file, 2, SPEC)
    for version in (1, 2, True, "3"):
        with pytest.raises(PublishError, match="not above the latest published version 2"):
            pub.publish(model_file, version, SPEC)
    with pytest.raises(PublishError, match="robots would reject"):
        pub.publish(model_file, 3, {**SPEC, "num_classes": 0})
    assert not (tmp_path / "cloud" / "3" / "model.onnx").exists()
    (tmp_path / "cloud" / "4").mkdir()                       # a copy cut short before its manifest
    (tmp_path / "cloud" / "4" / "model.onnx").write_bytes(b"partial")
    # Restarted with a new key: the latest manifest moves to it (key rotation).
    new_key = Ed25519PrivateKey.generate()
    restarted = ModelPublisher(BrokerConfig(port=broker.port), "default", tmp_path / "cloud", new_key, "cloud-b",
                               ServeOptions(chunk_size=CHUNK))
    assert restarted.latest_version == 2 and not (tmp_path / "cloud" / "4").exists()
    stored = json.loads((tmp_path / "cloud" / "2" / "manifest.json").read_bytes())
    assert stored["key_id"] == "cloud-b"
    with pytest.raises(PublishError):
        restarted.publish(model_file, 2, SPEC)
    limits = dataclasses.replace(restarted.options.limits, max_model_bytes=1000)
    small = ModelPublisher(BrokerConfig(port=broker.port), "default", tmp_path / "cloud", new_key, "cloud-b",
                           ServeOptions(chunk_size=CHUNK, limits=limits))
    with pytest.raises(PublishError, match="above the robots' limit 1000"):
        small.publish(model_file, 5, SPEC)

"""The operators' commands as operators run them: `python -m cloud_bridge.model_rollback`
and `python -m cloud_bridge.lifelong --publish` in their own processes, configured by a
bridge YAML whose broker section points at a real mosquitto; what reaches the fleet's
retained topics is checked with the fleet's public key, as a robot checks it.

    .venv/bin/python -m pytest tests/test_cli_entry_points.py -q
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cloud_bridge.config import BrokerConfig
from cloud_bridge.lifelong_publish import manifest_spec
from seg_harness.local_cloud import free_port
from cloud_bridge.model_push import ModelPublisher
from cloud_bridge.sample_store import SqliteSampleStore
from rfnet.engines import ModelSpec
from segwire import fleet_command_topic, make_client
from segwire.model_command import verify_command
from segwire.model_keys import generate_keypair, load_private_key, load_public_key
from test_lifelong import new_task_sample, write_index
from test_lifelong_publish import ManifestWatcher, candidate

pytestmark = pytest.mark.timeout(240)
REPO_ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "fleet-test"


def run_module(module: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout)


def bridge_yaml(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(f"storage_dir: {path.parent / 'storage'}\nbroker:\n  host: 127.0.0.1\n  port: {port}\n"
                    + extra)
    return path


@pytest.fixture
def key_files(tmp_path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys", KEY_ID)


class TopicWatcher:
    """Every message on one topic, in arrival order, as (payload, retained)."""

    def __init__(self, port: int, topic: str):
        self.messages, self.arrived, self.subscribed = [], threading.Condition(), threading.Event()
        self.client = make_client(f"watcher-{threading.get_native_id()}-{id(self)}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), f"no subscription to {topic}"

    def _on_message(self, client, userdata, message) -> None:
        with self.arrived:
            self.messages.append((message.payload, message.retain))
            self.arrived.notify_all()

    def wait_count(self, n: int, timeout: float = 10.0) -> list[tuple[bytes, bool]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= n, timeout), \
                f"{n} messages expected, got {len(self.messages)}"
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- python -m cloud_bridge.model_rollback ---------------------------------------------------

def test_rollback_command_line_signs_and_retains_the_command_and_refuses_bad_requests(tmp_path, broker,
                                                                                      key_files):
    key, pub = key_files
    trusted = {KEY_ID: load_public_key(pub)}
    model_dir = tmp_path / "published"
    # Versions 1 and 2 as the publisher leaves them (<N>/model.onnx and its signed manifest);
    # it is never started, so nothing of it reaches the broker.
    publisher = ModelPublisher(BrokerConfig(port=broker.port), "default", model_dir, load_private_key(key), KEY_ID)
    spec = manifest_spec(ModelSpec(num_classes=3, input_height=64, input_width=96, use_depth=True))
    for version in (1, 2):
        blob = tmp_path / f"v{version}.onnx"
        blob.write_bytes(bytes([version]) * 1000)
        publisher.publish(blob, version, spec)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]
    config = bridge_yaml(tmp_path / "bridge.yaml", broker.port)

    def rollback(*args, signing_key=key, config=config):
        return run_module("cloud_bridge.model_rollback", "--config", config, "--model-dir", model_dir,
                          "--signing-key", signing_key, *args, timeout=60)

    def verified(payload: bytes):
        return verify_command(payload, trusted)

    watcher = TopicWatcher(broker.port, fleet_command_topic("default"))
    try:
        first = rollback("--to", 1, "--reason", "v2 misses kerbs")
        assert first.returncode == 0, first.stderr
        assert ("rollback command 1 sent to fleet 'default': back to version 1, versions 2..2 withdrawn"
                in first.stdout)
        [(payload, _)] = watcher.wait_count(1)
        command = verified(payload)
        assert (command.fleet, command.sequence, command.target_version, command.withdrawn_through) == \
            ("default", 1, 1, 2)
        assert command.key_id == KEY_ID and command.reason == "v2 misses kerbs" and command.robots == []

        # Refused before anything is sent, each with a message saying why.
        not_pem = tmp_path / "keys" / "not-pem.key"
        not_pem.write_text("not a key\n")
        not_pem.chmod(0o600)
        open_key = tmp_path / "keys" / "open.key"
        open_key.write_bytes(key.read_bytes())
        open_key.chmod(0o644)
        for args, kwargs, message in [
            (("--to", 5), {}, "version 5 was never published from"),
            (("--to", 2), {}, "nothing to withdraw: the latest published version is 2, the target 2"),
            (("--to", 1), {"signing_key": tmp_path / "keys" / "missing.key"}, "cannot read private key"),
            (("--to", 1), {"signing_key": not_pem}, "is not an unencrypted PEM private key"),
            (("--to", 1), {"signing_key": open_key}, "is readable by group or others"),
            (("--to", 1), {"config": bridge_yaml(tmp_path / "bad.yaml", broker.port, "brokr: {}\n")}, "brokr"),
            # Above the robots' size limit: they would refuse it, and it would replace the retained command.
            (("--to", 1, "--reason", "x" * 70_000), {}, "robots would refuse this command: oversized"),
        ]:
            refused = rollback(*args, **kwargs)
            assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
            assert refused.stderr.startswith("model_rollback: ") and message in refused.stderr, (args, refused.stderr)
            assert "Traceback" not in refused.stderr and "sent to fleet" not in refused.stdout

        second = rollback("--to", 1, "--robot", "dog1")
        assert second.returncode == 0, second.stderr
        assert "rollback command 2 sent to fleet 'default'" in second.stdout
        # Exactly two commands reached the fleet: the refused runs sent nothing and used no sequence.
        messages = watcher.wait_count(2)
        assert [verified(p).sequence for p, _ in messages] == [1, 2]
    finally:
        watcher.close()

    # A robot connecting now gets the latest command, retained.
    late = TopicWatcher(broker.port, fleet_command_topic("default"))
    try:
        [(payload, retained)] = late.wait_count(1)
        command = verified(payload)
        assert retained and (command.sequence, command.target_version, command.withdrawn_through) == (2, 1, 2)
        assert command.robots == ["dog1"]
    finally:
        late.close()

    closed = rollback("--to", 1, config=bridge_yaml(tmp_path / "closed.yaml", port := free_port()))
    assert closed.returncode == 2 and "Traceback" not in closed.stderr
    assert f"model_rollback: cannot reach the broker at 127.0.0.1:{port}" in closed.stderr


# --- python -m cloud_bridge.lifelong --publish -----------------------------------------------

@pytest.fixture
def lifelong_setup(tmp_path):
    """A bridge YAML with a lenient gate and one tiny epoch; a store of 5 new-task frames
    (4 training, 1 held out), old-task data, and an untrained 3-class current model."""
    data = tmp_path / "data"
    data.mkdir()
    old_train, old_val = write_index(data, "old_train", 4, seed=1), write_index(data, "old_val", 2, seed=2)
    storage = tmp_path / "storage"
    with SqliteSampleStore(storage / "samples") as store:
        for i in (0, 1, 2, 3, 7):
            store.put(new_task_sample(i, np.random.default_rng(i), "sam"))
    current = candidate(tmp_path / "current.pth", num_classes=3, seed=0)
    return {"storage": storage, "current": current, "lifelong": (
        "lifelong:\n  min_new_samples: 5\n"
        f"  old_task_index: {old_val}\n  rehearsal: {{index: {old_train}, ratio: 1.0}}\n"
        "  train: {epochs: 1, batch_size: 4, input_height: 64, input_width: 96, augment: false}\n"
        "  gate: {min_new_gain: -1.0, max_old_drop: 1.0}\n")}


def test_lifelong_publish_refuses_bad_arguments_before_training(tmp_path, broker, key_files, lifelong_setup):
    config = bridge_yaml(tmp_path / "bridge.yaml", broker.port, lifelong_setup["lifelong"])
    base = ["--config", config, "--current", lifelong_setup["current"], "--force", "--threads", 1]
    model_dir = tmp_path / "published"

    no_key = run_module("cloud_bridge.lifelong", *base, "--publish", "--model-dir", model_dir)
    assert no_key.returncode == 2, no_key.stderr
    assert "lifelong: --publish: give --signing-key" in no_key.stderr

    no_store = run_module("cloud_bridge.lifelong", *base, "--store", tmp_path / "nowhere", "--publish",
                          "--signing-key", key_files[0], "--model-dir", model_dir)
    assert no_store.returncode == 2, no_store.stderr
    assert f"lifelong: no sample store at {tmp_path / 'nowhere'}" in no_store.stderr

    no_broker = run_module("cloud_bridge.lifelong", "--config", bridge_yaml(
        tmp_path / "closed.yaml", port := free_port(), lifelong_setup["lifelong"]), *base[2:], "--publish",
        "--signing-key", key_files[0], "--model-dir", tmp_path / "published-closed")
    assert no_broker.returncode == 2, no_broker.stderr
    assert f"lifelong: --publish: the broker at 127.0.0.1:{port} did not answer" in no_broker.stderr

    for refused in (no_key, no_store, no_broker):
        assert "Traceback" not in refused.stderr and "candidate" not in refused.stdout
    assert not (lifelong_setup["storage"] / "lifelong").exists(), "a refused run trained or wrote a marker"
    assert not model_dir.exists()


def test_lifelong_publish_pushes_a_passing_candidate_to_the_fleet(tmp_path, broker, key_files, lifelong_setup):
    key, pub = key_files
    config = bridge_yaml(tmp_path / "bridge.yaml", broker.port, lifelong_setup["lifelong"])
    model_dir = tmp_path / "published"
    run = run_module("cloud_bridge.lifelong", "--config", config, "--current", lifelong_setup["current"],
                     "--force", "--threads", 1, "--publish", "--signing-key", key, "--model-dir", model_dir,
                     "--serve-for", 1, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "candidate 1: PUBLISH" in run.stdout
    assert f"pushed to fleet 'default' as model version 1 ({model_dir / '1'})" in run.stdout
    assert "serving the model to the robots for 1s" in run.stdout
    assert (model_dir / "1" / "manifest.json").is_file() and (model_dir / "1" / "model.onnx").is_file()

    watcher = ManifestWatcher(broker, {KEY_ID: load_public_key(pub)})   # verifies what it receives
    try:
        manifest = watcher.wait_version(1, timeout=10)
        assert manifest.spec == {"num_classes": 3, "input_height": 64, "input_width": 96, "use_depth": True}
        assert "lifelong candidate 1" in manifest.notes
        assert [retained for _, retained in watcher.manifests] == [True]
    finally:
        watcher.close()

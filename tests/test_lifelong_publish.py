"""A gated lifelong candidate reaches the fleet: exported to ONNX at the robots' spec,
published as the next version on a real mosquitto, versions growing across restarts.

    .venv/bin/python -m pytest tests/test_lifelong_publish.py -q
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from cloud_bridge.config import BrokerConfig
from cloud_bridge.lifelong import GateDecision, TaskScores
from cloud_bridge.lifelong_publish import CandidatePusher, CandidatePushError
from cloud_bridge.model_push import ModelPublisher
from rfnet.checkpoint import save_checkpoint
from rfnet.engines import ModelSpec
from rfnet.network import RFNet, RFNetConfig
from segwire import make_client, models_manifest_topic
from segwire.model_keys import generate_keypair, load_private_key, load_public_key
from segwire.model_manifest import verify_manifest

pytestmark = pytest.mark.timeout(240)
SPEC = ModelSpec(num_classes=5, input_height=64, input_width=96, use_depth=True)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # a shared 2-core machine: two threads mostly wait for each other
    yield
    torch.set_num_threads(before)


@pytest.fixture
def keys(tmp_path):
    private, public = generate_keypair(tmp_path / "keys", "fleet-test")
    return load_private_key(private), {"fleet-test": load_public_key(public)}


def candidate(path: Path, num_classes: int, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(RFNet(RFNetConfig(num_classes=num_classes)).eval(), path, epoch=1)


def decision(candidate_id: int, path: Path) -> GateDecision:
    old, new = TaskScores(0.61, 0.605), TaskScores(0.22, 0.48)
    return GateDecision(candidate_id, True, (), old, new, 0.06, 0.0, path, path.with_suffix(".json"),
                        {"current": {"version": "0123456789ab"}})


class ManifestWatcher:
    """A robot's view of the fleet's retained manifest topic."""

    def __init__(self, broker, trusted):
        self.trusted, self.manifests, self.arrived = trusted, [], threading.Condition()
        self.client = make_client("manifest-watcher")
        self.client.on_connect = lambda c, *_: c.subscribe(models_manifest_topic("default"), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        manifest = verify_manifest(message.payload, self.trusted)
        with self.arrived:
            self.manifests.append((manifest, message.retain))
            self.arrived.notify_all()

    def wait_version(self, version: int, timeout: float = 60.0):
        with self.arrived:
            assert self.arrived.wait_for(lambda: any(m.version == version for m, _ in self.manifests), timeout), \
                f"manifest {version} never arrived; got {[m.version for m, _ in self.manifests]}"
            return next(m for m, _ in self.manifests if m.version == version)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_pushed_candidates_get_growing_versions_and_robots_see_the_exported_file(tmp_path, broker, keys):
    private, trusted = keys
    published = tmp_path / "published"
    publisher = ModelPublisher(BrokerConfig(port=broker.port), "default", published, private, "fleet-test")
    watcher = None
    try:
        publisher.start()
        assert publisher.wait_subscribed(30)
        pusher = CandidatePusher(publisher, SPEC)
        first = candidate(tmp_path / "candidate-000001.pth", SPEC.num_classes, seed=1)
        assert pusher(first, decision(1, first)) == 1

        watcher = ManifestWatcher(broker, trusted)   # connects after the push: gets the retained manifest
        manifest = watcher.wait_version(1)
        stored = published / "1" / "model.onnx"
        assert manifest.model_sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
        assert manifest.spec == {"num_classes": 5, "input_height": 64, "input_width": 96, "use_depth": True}
        assert "candidate 1" in manifest.notes and "0.2200 -> 0.4800" in manifest.notes
        inputs = {i.name: i.shape for i in ort.InferenceSession(str(stored)).get_inputs()}
        assert inputs == {"rgb": [1, 3, 64, 96], "depth": [1, 64, 96]}   # the robots' spec, not the training size
        assert not list(tmp_path.glob("push-*")), "the temporary export was left behind"

        second = candidate(tmp_path / "candidate-000002.pth", SPEC.num_classes, seed=2)
        assert pusher(second, decision(2, second)) == 2
        assert watcher.wait_version(2).model_sha256 != manifest.model_sha256
    finally:
        publisher.stop()
        if watcher is not None:
            watcher.close()

    # A restarted publisher (another process, another day) continues the numbering.
    restarted = ModelPublisher(BrokerConfig(port=broker.port), "default", published, private, "fleet-test")
    watcher = ManifestWatcher(broker, trusted)
    try:
        restarted.start()
        third = candidate(tmp_path / "candidate-000003.pth", SPEC.num_classes, seed=3)
        assert CandidatePusher(restarted, SPEC)(third, None) == 3
        assert "candidate-000003.pth" in watcher.wait_version(3).notes
    finally:
        restarted.stop()
        watcher.close()


def test_a_candidate_with_other_classes_is_not_pushed(tmp_path, broker, keys):
    private, _ = keys
    publisher = ModelPublisher(BrokerConfig(port=broker.port), "default", tmp_path / "published", private,
                               "fleet-test")
    try:
        publisher.start()
        wrong = candidate(tmp_path / "candidate-000001.pth", num_classes=7, seed=1)
        with pytest.raises(CandidatePushError, match="7 classes"):
            CandidatePusher(publisher, SPEC)(wrong, decision(1, wrong))
        assert publisher.latest_version == 0 and not (tmp_path / "published" / "1").exists()
    finally:
        publisher.stop()

"""A node killed (SIGKILL) at any point of a model update restarts on the old model or the
new one, never a mix, and then finishes the update: real node over DDS, real mosquitto.

Kill points, each waited for on the node's model directory or log:
  downloading  some chunks are on disk, the file is not complete;
  downloaded   versions/1/ just appeared: the engine is being built and canary-checked;
  swapped      the node logged that model 1 serves (current.json was just replaced).
Where the node is when the signal lands is recorded: whichever it is, the checks are the same.
"""
from __future__ import annotations

import json
import re
import shutil
import signal

import pytest

from cloud_bridge.config import BrokerConfig
from seg_harness.local_cloud import LocalBroker
from cloud_bridge.model_push import ModelPublisher
from rfnet.checkpoint import load_checkpoint
from ros_processes import NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, ros_env, wait_serving, wait_until
from seg_edge_node.model_manager import ModelManager
from rfnet.checkpoint import model_version
from segwire.model_keys import generate_keypair, load_private_key
from test_model_update_e2e import SPEC, fine_tuned_onnx, updating_node_params

pytestmark = [pytest.mark.ros, pytest.mark.timeout(420)]


def served_version(node: Proc) -> str:
    """The version the node says it serves once started ("serving model update N ..." comes earlier)."""
    wait_until(lambda: re.search(r"serving model \w+ on ", node.log()) or not node.alive(), 120, "the node")
    found = re.search(r"serving model (\w+) on ", node.log())
    assert found, node.log()
    return found.group(1)


def live_model(models) -> str | None:
    """The version current.json names, after checking it is whole and matches its file;
    None when there is none (the node serves its model_path)."""
    pointer = models / "current.json"
    if not pointer.exists():
        return None
    json.loads(pointer.read_text())   # a torn write would not parse
    live = ModelManager.persisted(models)
    assert live is not None, f"current.json names a missing or changed file: {pointer.read_text()}"
    return live.version


@pytest.mark.parametrize("kill_at", ["downloading", "downloaded", "swapped"])
def test_a_node_killed_around_a_swap_restarts_on_the_old_or_the_new_model(tmp_path, reference_checkpoint, kill_at):
    key_path, pub = generate_keypair(tmp_path / "signing", "fleet-2026")
    (tmp_path / "trusted").mkdir()
    shutil.copy(pub, tmp_path / "trusted")
    models = tmp_path / "models"
    broker = LocalBroker(tmp_path / "broker").start()
    env = ros_env(tmp_path)
    params = updating_node_params(tmp_path, reference_checkpoint, broker.port)
    publisher = ModelPublisher(BrokerConfig(port=broker.port), "default", tmp_path / "published",
                               load_private_key(key_path), "fleet-2026")
    node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
    camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", 320, "--height", 240,
                                          "--rate", 4, "--count", 100000, "--distinct", 4), env, tmp_path)
    try:
        new_onnx = fine_tuned_onnx(reference_checkpoint, tmp_path / "v1.onnx", seed=1)
        old, new = load_checkpoint(reference_checkpoint).version, model_version(new_onnx)
        wait_serving(node)
        assert served_version(node) == old
        publisher.start()
        assert publisher.wait_subscribed(30)
        publisher.publish(new_onnx, 1, SPEC)
        if kill_at == "downloading":   # a ~95 MB model in 363 chunks: the kill lands long before the last
            wait_until(lambda: len(list((models / "partial" / "1").glob("*.chunk"))) >= 3, 120, "chunks on disk",
                       interval=0.01)
        elif kill_at == "downloaded":
            wait_until(lambda: (models / "versions" / "1" / "manifest.json").exists(), 180, "the download",
                       interval=0.005)
        else:
            wait_until(lambda: "now serving model 1 " in node.log(), 180, "the swap", interval=0.01)
        node.signal(signal.SIGKILL)
        assert node.wait(20) == -signal.SIGKILL
        swapped_before_kill = "now serving model 1 " in node.log()
        if kill_at == "downloading":
            assert not (models / "versions" / "1").exists(), "the kill was meant to land mid-download"
        if kill_at == "swapped":
            assert swapped_before_kill

        # What is on disk names the old model or the whole new one, and the restart serves exactly that.
        live = live_model(models)
        assert live in (None, new)
        assert live == new or not swapped_before_kill, "a swap the node logged was not persisted"
        node = Proc("node-restarted", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
        wait_serving(node)
        assert served_version(node) == (new if live == new else old)
        print(f"kill at {kill_at}: swap logged before the kill: {swapped_before_kill}; restarted on "
              f"{'new' if live == new else 'old'}")

        # And the update completes: the download resumes, or the kept file is offered again.
        if live != new:
            wait_until(lambda: "now serving model 1 " in node.log(), 240, "the update after the restart")
        assert live_model(models) == new
    finally:
        publisher.stop()
        camera.stop()
        node.stop()
        broker.stop()

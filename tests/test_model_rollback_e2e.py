"""A signed rollback command sends a running node back to a kept version; forged and
replayed commands are refused with a model status saying why while the current model
keeps serving; after a restart the node stays on the rolled-back version and refuses the
withdrawn one (real node over DDS, real mosquitto, real publisher)."""
from __future__ import annotations

import json
import shutil
import threading

import pytest

from cloud_bridge.config import BrokerConfig
from seg_harness.local_cloud import LocalBroker
from cloud_bridge.model_push import ModelPublisher
from cloud_bridge.model_rollback import issue_rollback, publish_retained
from ros_processes import NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, ros_env, wait_serving, wait_until
from segwire import decode_transfer_status, fleet_command_topic, make_client, model_status_topic
from segwire.model_command import rollback_command, sign_command
from segwire.model_keys import generate_keypair, load_private_key
from test_model_update_e2e import SPEC, fine_tuned_onnx, updating_node_params

pytestmark = [pytest.mark.ros, pytest.mark.timeout(480)]


class StatusWatcher:
    """The robot's retained model status on MQTT, as a fleet dashboard sees it."""

    def __init__(self, port: int, robot_id: str):
        self.statuses, self._lock = [], threading.Lock()
        self.client = make_client("status-watcher")
        self.client.on_connect = lambda c, *_: c.subscribe(model_status_topic(robot_id), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.statuses.append(decode_transfer_status(message.payload))

    def saw(self, reason: str) -> bool:
        with self._lock:
            return any(s.reason == reason for s in self.statuses)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_signed_rollback_goes_back_and_forged_or_replayed_commands_are_refused(tmp_path, reference_checkpoint):
    signing, trusted, rogue = tmp_path / "signing", tmp_path / "trusted", tmp_path / "rogue"
    key_path, pub = generate_keypair(signing, "fleet-2026")
    trusted.mkdir()
    shutil.copy(pub, trusted)
    rogue_key = load_private_key(generate_keypair(rogue, "fleet-2026")[0])    # same id, another key
    key = load_private_key(key_path)
    broker = LocalBroker(tmp_path / "broker").start()
    env = ros_env(tmp_path)
    params = updating_node_params(tmp_path, reference_checkpoint, broker.port)
    published = tmp_path / "published"
    publisher = ModelPublisher(BrokerConfig(port=broker.port), "default", published, key, "fleet-2026")
    watcher = StatusWatcher(broker.port, "dog1")
    node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
    # The canary check of each swap needs camera frames, all along.
    camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", 320, "--height", 240,
                                          "--rate", 4, "--count", 100000, "--distinct", 4), env, tmp_path)
    try:
        wait_serving(node)
        publisher.start()
        assert publisher.wait_subscribed(30)
        for version in (1, 2):
            publisher.publish(fine_tuned_onnx(reference_checkpoint, tmp_path / f"v{version}.onnx", seed=version),
                              version, SPEC)
            wait_until(lambda: f"now serving model {version} " in node.log(), 120, f"the node to take model {version}")

        # Signed by a key with the trusted key's id but not the trusted key: refused, model 2 serves on.
        forged = sign_command(rollback_command("default", 99, 1, 2), rogue_key, "fleet-2026")
        publish_retained(BrokerConfig(port=broker.port), fleet_command_topic("default"), forged.to_bytes())
        wait_until(lambda: watcher.saw("bad_signature"), 60, "the forged command's refusal in the model status")
        assert "rollback command refused: bad_signature" in node.log()

        command = issue_rollback(BrokerConfig(port=broker.port), published, key, "fleet-2026", "default", 1,
                                 reason="model 2 misses kerbs")
        assert (command.sequence, command.target_version, command.withdrawn_through) == (1, 1, 2)
        wait_until(lambda: "now serving model 1 " in node.log() and "after rollback" in node.log(), 120,
                   "the node to roll back to model 1")
        current = json.loads((tmp_path / "models" / "current.json").read_text())
        assert current["number"] == 1

        # An older decision (sequence 1 again, other content), properly signed: a replay, refused.
        replay = sign_command(rollback_command("default", 1, 0, 2), key, "fleet-2026")
        publish_retained(BrokerConfig(port=broker.port), fleet_command_topic("default"), replay.to_bytes())
        wait_until(lambda: watcher.saw("replayed"), 60, "the replayed command's refusal in the model status")
        assert "now serving model 0" not in node.log()
        assert node.stop() == 0

        # Restart: model 1 from current.json, and the retained manifest of model 2 is refused as withdrawn.
        node = Proc("node2", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
        wait_serving(node)
        assert "serving model update 1 from the last run" in node.log()
        wait_until(lambda: "was withdrawn by a rollback command" in node.log(), 60, "model 2 refused as withdrawn")
        wait_until(lambda: watcher.saw("withdrawn"), 30, "the withdrawal in the model status")
        assert "now serving model 2" not in node.log()
    finally:
        publisher.stop()
        watcher.close()
        camera.stop()
        node.stop()
        broker.stop()

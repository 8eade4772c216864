"""Signed rollback commands: the wire form is authenticated and strict, and a robot acts
only on a fresh command for it, with a kept intact target; the serving model stays otherwise."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rfnet.engines import EngineConfig, ModelSpec, load_engine
from rfnet.network import RFNet
from rfnet.onnx_export import export_onnx
from rfnet.preprocessing import PreprocessConfig
from seg_edge_node.model_manager import ModelManager, ModelManagerConfig, ServingModel
from rfnet.checkpoint import model_version
from seg_edge_node.model_rollback import STATE_FILE, RollbackCommands
from seg_edge_node.pipeline import SegmentationPipeline
from seg_harness.synthetic_camera import synthetic_frame
from segwire.model_command import CommandError, rollback_command, sign_command, verify_command
from segwire.model_manifest import build_manifest

KEY, ROGUE = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
TRUSTED = {"fleet-a": KEY.public_key()}
SPEC = ModelSpec(30, 64, 96, use_depth=True)


def signed(sequence=1, target=1, through=2, robots=(), key=KEY, fleet="default") -> bytes:
    return sign_command(rollback_command(fleet, sequence, target, through, robots, "test"), key, "fleet-a").to_bytes()


# --- wire form ----------------------------------------------------------------------------

def test_a_signed_command_verifies_and_any_change_breaks_it():
    command = verify_command(signed(7, 1, 3, ["dog1"]), TRUSTED)
    assert (command.sequence, command.target_version, command.withdrawn_through, command.robots) == (7, 1, 3, ["dog1"])
    assert command.withdraws(2) and command.withdraws(3) and not command.withdraws(1) and not command.withdraws(4)
    obj = json.loads(signed(7, 1, 3))
    obj["target_version"] = 0    # an attacker widening the rollback
    with pytest.raises(CommandError) as e:
        verify_command(json.dumps(obj).encode(), TRUSTED)
    assert e.value.reason == "bad_signature"


@pytest.mark.parametrize("change, reason", [
    (lambda b: sign_command(verify_command(b, TRUSTED), ROGUE, "fleet-a").to_bytes(), "bad_signature"),
    (lambda b: sign_command(verify_command(b, TRUSTED), KEY, "other").to_bytes(), "unknown_key"),
    (lambda b: b[:-5], "malformed"),
    (lambda b: json.dumps({**json.loads(b), "extra": 1}).encode(), "malformed"),
    (lambda b: json.dumps({k: v for k, v in json.loads(b).items() if k != "robots"}).encode(), "malformed"),
    (lambda b: b" " * 70_000, "oversized"),
])
def test_bad_commands_are_refused_with_a_reason(change, reason):
    with pytest.raises(CommandError) as e:
        verify_command(change(signed()), TRUSTED)
    assert e.value.reason == reason


def test_a_command_that_withdraws_nothing_cannot_be_built():
    with pytest.raises(CommandError, match="nothing is withdrawn"):
        rollback_command("default", 1, 3, 3)


# --- robot side ---------------------------------------------------------------------------

def build(path):
    return load_engine(EngineConfig(str(path), SPEC, "onnxruntime", device="cpu", threads=1)).engine


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = RFNet().eval()
    paths = {0: export_onnx(model, SPEC, root / "installed.onnx")}
    for n in (1, 2):
        with torch.no_grad():
            model.logits.conv.weight.add_(0.002 * torch.randn_like(model.logits.conv.weight))
        paths[n] = export_onnx(model, SPEC, root / f"{n}.onnx")
    return paths


@pytest.fixture
def robot(onnx_models, tmp_path):
    """A model manager serving version 2, with 1 kept, as the downloader leaves them."""
    directory = tmp_path / "models"
    for n in (1, 2):
        folder = directory / "versions" / str(n)
        folder.mkdir(parents=True)
        shutil.copy(onnx_models[n], folder / "model.onnx")
        manifest = build_manifest(folder / "model.onnx", n, dataclasses.asdict(SPEC), 64 * 1024)
        (folder / "manifest.json").write_bytes(manifest.to_bytes())
    pipeline = SegmentationPipeline(build(directory / "versions" / "2" / "model.onnx"), PreprocessConfig(64, 96))
    pipeline.run(*synthetic_frame(0, 120, 160))   # the canary frame
    v2 = directory / "versions" / "2" / "model.onnx"
    manager = ModelManager(ModelManagerConfig(directory=str(directory)), pipeline,
                           ServingModel(2, model_version(v2), v2), build)
    refused = []

    def commands():
        return RollbackCommands(directory, TRUSTED, "dog1", "default", lambda: manager.serving.number,
                                lambda n, p: manager.offer(n, p, rollback=True), onnx_models[0], refused.append)
    return manager, commands, refused, directory


def settle(manager, timeout=60.0):
    deadline = time.monotonic() + timeout
    while manager._busy.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not manager._busy.locked()


def test_a_fresh_command_rolls_back_and_its_withdrawal_survives_a_restart(robot):
    manager, commands, refused, directory = robot
    handler = commands()
    payload = signed(sequence=1, target=1, through=2)
    outcome = handler.handle(payload)
    assert outcome.action == "rolling_back", outcome
    settle(manager)
    assert manager.serving.number == 1 and ModelManager.persisted(directory).number == 1
    assert handler.withdrawn(2) and not handler.withdrawn(3)
    # The retained copy arriving again (reconnect, restart) is no error and changes nothing.
    restarted = commands()
    assert restarted.withdrawn(2) and restarted.last_sequence == 1
    assert restarted.handle(payload).action == "nothing_to_do"
    assert not refused


@pytest.mark.parametrize("payload, reason", [
    (lambda: signed(key=ROGUE), "bad_signature"),
    (lambda: signed(fleet="other"), "other_fleet"),
    (lambda: signed(sequence=2, target=7, through=9), "nothing_to_do"),      # serving 2 is not withdrawn
    (lambda: signed(sequence=2, target=0, through=2), "rolling_back"),       # the installed model
])
def test_commands_the_robot_acts_on_and_those_it_refuses(robot, payload, reason):
    manager, commands, refused, _ = robot
    outcome = commands().handle(payload())
    assert reason in (outcome.reason, outcome.action), outcome
    if outcome.refused:
        assert refused == [outcome.message]   # what the node puts in its model status
    settle(manager)
    assert manager.serving.number == (0 if reason == "rolling_back" else 2)


def test_replayed_and_unknown_version_commands_are_refused_and_the_model_keeps_serving(robot):
    manager, commands, refused, directory = robot
    handler = commands()
    assert handler.handle(signed(sequence=5, target=1, through=2, robots=["dog7"])).action == "not_addressed"
    shutil.rmtree(directory / "versions" / "1")
    outcome = handler.handle(signed(sequence=5, target=1, through=2))
    assert outcome.reason == "unknown_version" and "kept: [2]" in outcome.message
    assert not handler.withdrawn(2), "a refused command withdraws nothing"
    assert handler.handle(signed(sequence=6, target=0, through=2)).action == "rolling_back"
    settle(manager)
    old = handler.handle(signed(sequence=4, target=0, through=2))   # an older decision presented again
    assert old.reason == "replayed" and "not above the last command acted on (6)" in old.message
    assert manager.serving.number == 0 and manager.status.state == "serving"
    assert json.loads((directory / STATE_FILE).read_text())["sequence"] == 6
    assert len(refused) == 2

"""Hot model swaps on the robot: only good models go live, frames keep flowing, state survives."""
from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch

from rfnet.engines import EngineConfig, ModelSpec, load_engine
from rfnet.network import RFNet
from rfnet.onnx_export import export_onnx
from rfnet.preprocessing import PreprocessConfig
from seg_edge_node.model_manager import ModelManager, ModelManagerConfig, ServingModel
from rfnet.checkpoint import model_version
from seg_edge_node.pipeline import SegmentationPipeline
from seg_harness.synthetic_camera import synthetic_frame

SPEC = ModelSpec(30, 64, 96, use_depth=True)


def build(path):
    return load_engine(EngineConfig(str(path), SPEC, "onnxruntime", device="cpu", threads=1)).engine


def export(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(model.eval(), SPEC, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    base = RFNet().eval()
    out = {"base": export(base, root / "start" / "model.onnx")}
    for n in (1, 2, 3, 4):   # small fine-tuning steps: mostly the same answers
        with torch.no_grad():
            base.logits.conv.weight.add_(0.002 * torch.randn_like(base.logits.conv.weight))
        out[n] = export(base, root / "versions" / str(n) / "model.onnx")
    torch.manual_seed(99)
    out["unrelated"] = export(RFNet(), root / "versions" / "90" / "model.onnx")
    broken = RFNet()
    with torch.no_grad():
        broken.logits.conv.weight.fill_(float("nan"))
    out["nan"] = export(broken, root / "versions" / "91" / "model.onnx")
    garbage = root / "versions" / "92" / "model.onnx"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not an onnx file")
    out["garbage"] = garbage
    return root, out


@pytest.fixture
def setup(models, tmp_path):
    root, shared = models

    class Staged(dict):
        """Copies of the models where the downloader would put them: <dir>/versions/<n>/."""

        def __missing__(self, key):
            dst = tmp_path / "mgr" / "versions" / str(key) / "model.onnx"
            dst.parent.mkdir(parents=True)
            shutil.copy(shared[key], dst)
            self[key] = dst
            return dst
    paths = Staged(base=shared["base"])
    pipeline = SegmentationPipeline(build(paths["base"]), PreprocessConfig(64, 96))
    rgb, depth = synthetic_frame(0, 120, 160)
    pipeline.run(rgb, depth)   # a canary frame
    changes = []
    manager = ModelManager(ModelManagerConfig(directory=str(tmp_path / "mgr"), keep_versions=2), pipeline,
                           ServingModel(0, model_version(paths["base"]), paths["base"]), build,
                           on_change=lambda m, s: changes.append((m.number, s.state, s.last_error)))
    return manager, pipeline, paths, changes


def settle(manager, timeout=60.0):
    deadline = time.monotonic() + timeout
    while manager._busy.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not manager._busy.locked(), "update did not finish"


def test_new_model_goes_live_while_frames_keep_flowing(setup, tmp_path):
    manager, pipeline, paths, changes = setup
    old_engine = pipeline.engine
    done, errors, frames = threading.Event(), [], [0]

    def camera():
        rgb, depth = synthetic_frame(1, 120, 160)
        while not done.is_set():
            try:
                pipeline.run(rgb, depth)
                frames[0] += 1
            except Exception as e:   # pragma: no cover - the assertion reports it
                errors.append(e)
    thread = threading.Thread(target=camera)
    thread.start()
    try:
        assert manager.offer(1, paths[1])
        settle(manager)
        n = frames[0]
        time.sleep(0.3)
        assert frames[0] > n, "frames stopped after the swap"
    finally:
        done.set()
        thread.join()
    assert not errors
    assert manager.serving.number == 1 and pipeline.engine is not old_engine
    assert [c[:2] for c in changes] == [(0, "updating"), (1, "serving")]
    persisted = ModelManager.persisted(tmp_path / "mgr")
    assert persisted == manager.serving


@pytest.mark.parametrize("bad,reason", [("nan", "non-finite"), ("unrelated", "agrees with the serving model"),
                                        ("garbage", "could not be loaded")])
def test_bad_candidates_never_go_live(setup, tmp_path, bad, reason):
    manager, pipeline, paths, changes = setup
    engine = pipeline.engine
    assert manager.offer(5, paths[bad])
    settle(manager)
    assert pipeline.engine is engine and manager.serving.number == 0
    assert manager.status.state == "rolled_back" and reason in manager.status.last_error
    assert changes[-1][1] == "rolled_back"
    assert ModelManager.persisted(tmp_path / "mgr") is None   # nothing new was recorded as live


def test_downgrades_are_refused_and_rollback_is_explicit(setup):
    manager, pipeline, paths, _ = setup
    assert manager.offer(2, paths[2])
    settle(manager)
    assert not manager.offer(1, paths[1])
    assert "not newer" in manager.status.last_error and manager.serving.number == 2
    assert manager.rollback()
    settle(manager)
    assert manager.serving.number == 0 and manager.status.state == "serving"
    assert not manager.rollback()   # no earlier model is kept any more
    assert "no earlier model" in manager.status.last_error


def test_old_versions_are_pruned_but_the_serving_and_previous_stay(setup):
    manager, _, paths, _ = setup
    for n in (1, 2, 3):
        assert manager.offer(n, paths[n])
        settle(manager)
    assert manager.serving.number == 3
    assert paths[3].exists() and paths[2].exists() and not paths[1].exists()


def test_a_changed_model_file_is_not_trusted_at_start(setup, tmp_path):
    manager, _, paths, _ = setup
    assert manager.offer(4, paths[4])
    settle(manager)
    assert ModelManager.persisted(tmp_path / "mgr").number == 4
    with open(paths[4], "ab") as f:
        f.write(b"tampered")
    assert ModelManager.persisted(tmp_path / "mgr") is None


def test_an_offer_before_the_first_camera_frame_waits_for_one(models, tmp_path):
    """After a restart the kept download is offered before the camera's first frame."""
    root, shared = models
    pipeline = SegmentationPipeline(build(shared["base"]), PreprocessConfig(64, 96))
    target = tmp_path / "mgr" / "versions" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    shutil.copy(shared[1], target)

    def manager(wait_s):
        return ModelManager(ModelManagerConfig(directory=str(tmp_path / "mgr"), canary_wait_s=wait_s), pipeline,
                            ServingModel(0, model_version(shared["base"]), shared["base"]), build)
    impatient = manager(0.2)
    impatient.offer(1, target)
    settle(impatient)
    assert impatient.serving.number == 0 and "no camera frame in 0.2 s" in impatient.status.last_error

    patient = manager(60.0)
    patient.offer(1, target)
    time.sleep(0.5)
    assert patient._busy.locked() and patient.serving.number == 0   # waiting, not failed
    pipeline.run(*synthetic_frame(0, 120, 160))
    settle(patient)
    assert patient.serving.number == 1 and patient.status.state == "serving"

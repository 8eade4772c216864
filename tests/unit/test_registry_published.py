"""The bridge's model registry finds the versions the model publisher pushed to the robots
(<model_dir>/<version>/model.onnx), by the version id the robots report, at the manifest's spec."""
from __future__ import annotations

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.config import BrokerConfig, ModelsConfig
from cloud_bridge.model_push import ModelPublisher
from cloud_bridge.model_registry import ModelRegistry
from rfnet.engines import ModelSpec
from rfnet.network import RFNet
from rfnet.onnx_export import export_onnx
from rfnet.checkpoint import model_version
from seg_harness.synthetic_camera import synthetic_frame

SPEC = {"num_classes": 30, "input_height": 64, "input_width": 96, "use_depth": True}


def test_published_versions_get_a_logit_vote_at_their_own_spec(tmp_path):
    torch.manual_seed(0)
    onnx = export_onnx(RFNet().eval(), ModelSpec(**SPEC), tmp_path / "candidate.onnx")
    published = tmp_path / "published"
    # Not started: publish() stores and signs without a broker (announced on connect).
    publisher = ModelPublisher(BrokerConfig(port=1), "default", published, Ed25519PrivateKey.generate(), "k")
    publisher.publish(onnx, 1, SPEC)
    (published / "2").mkdir()   # a copy cut short before its manifest: not a version
    (published / "2" / "model.onnx").write_bytes(b"partial")

    # The registry's own input size differs: a published model runs at the size it was exported for.
    registry = ModelRegistry(ModelsConfig(directory=str(published), input_height=480, input_width=640,
                                          cache_dir=str(tmp_path / "cache")))
    version = model_version(published / "1" / "model.onnx")   # what the robot reports in its hard frames
    assert registry.versions == [version]
    predictor = registry.predictor_for(version)
    assert predictor is not None and predictor.spec == ModelSpec(**SPEC) and predictor.version == version
    assert registry.predictor_for(version, use_depth=False) is None   # the graph has a depth input
    rgb, depth = synthetic_frame(1, 120, 160)
    logits = predictor.logits(rgb, depth)
    assert logits.shape == (30, 120, 160) and np.isfinite(logits).all()

    publisher.publish(onnx, 3, SPEC, notes="same file, new version")   # found on the next unknown version
    assert registry.predictor_for("000000000000") is None and registry.versions == [version]

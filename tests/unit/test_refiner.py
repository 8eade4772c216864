"""The bridge refines with a logit vote when it holds the robot's model version, else a majority vote."""
from __future__ import annotations

import shutil
import uuid

import numpy as np
import pytest

from cloud_bridge.config import ModelsConfig
from cloud_bridge.fusion import logit_vote, majority_vote
from cloud_bridge.mask_generators import RegionProposalConfig, RegionProposalGenerator
from cloud_bridge.model_registry import ModelRegistry
from cloud_bridge.refiner import Refiner
from rfnet.checkpoint import load_checkpoint
from seg_harness.synthetic_camera import synthetic_frame
from segwire import HardFrame

H, W = 120, 160


@pytest.fixture(scope="module")
def refiner(reference_checkpoint, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(reference_checkpoint, models / "rfnet.pth")
    registry = ModelRegistry(ModelsConfig(directory=str(models), input_height=96, input_width=128,
                                          cache_dir=str(tmp_path_factory.mktemp("cache"))))
    return Refiner(RegionProposalGenerator(RegionProposalConfig(scale=100.0, min_area=16)), registry)


def frame(version: str, with_depth: bool = True) -> HardFrame:
    rgb, depth = synthetic_frame(2, H, W)
    return HardFrame(robot_id="dog1", frame_uuid=str(uuid.uuid4()), stamp_ns=1, frame_id="camera",
                     model_version=version, mining_policy="random", mining_score=1.0, rgb=rgb,
                     depth_m=depth if with_depth else None, edge_labels=np.full((H, W), 7, np.uint8))


@pytest.mark.parametrize("with_depth", [True, False])
def test_known_model_version_gets_a_logit_vote(refiner, reference_checkpoint, with_depth):
    version = load_checkpoint(reference_checkpoint).version
    f = frame(version, with_depth)
    out = refiner.refine(f)
    assert out.refiner == "regions_felzenszwalb+logit_vote" and out.label_source == "region"
    predictor = refiner.registry.predictor_for(version, use_depth=with_depth)
    assert predictor.spec.use_depth == with_depth and predictor.version == version
    logits = predictor.logits(f.rgb, f.depth_m)
    assert logits.shape == (30, H, W)
    expected = logit_vote(refiner.generator.generate(f.rgb), logits)
    np.testing.assert_array_equal(out.labels, expected)
    assert not np.all(out.labels == 7), "the cloud's own model decided, not the uploaded labels"


def test_unknown_model_version_falls_back_to_the_edge_labels(refiner):
    f = frame("unknownversn")
    out = refiner.refine(f)
    assert out.refiner == "regions_felzenszwalb+majority_vote"
    np.testing.assert_array_equal(out.labels, majority_vote(refiner.generator.generate(f.rgb), f.edge_labels))
    assert np.all(out.labels == 7)


def test_describe_lists_the_models(refiner, reference_checkpoint):
    assert load_checkpoint(reference_checkpoint).version in refiner.describe()

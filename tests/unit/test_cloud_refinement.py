"""The cloud's refinement pieces of issue 10: depth regions on a constructed RGB-D frame,
the SAM stand-in's documented degradations, the probability vote's confidence,
class-balanced pseudo-label thresholds, the confidence-masked training labels, the
photometric augmentation, the cloud model's evidence and provenance in each sample."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cloud_bridge.cloud_semantics import (CloudModel, CloudModelConfig, SemanticsConfig, evidence, softmax,
                                          write_provenance)
from cloud_bridge.depth_regions import DepthRegionConfig, DepthRegionGenerator, noise_sigma
from cloud_bridge.fusion import MaskSet, blended_vote, logit_vote, majority_vote_confidence, probability_vote
from cloud_bridge.mask_generators import RegionProposalGenerator
from cloud_bridge.pseudo_labels import PseudoLabelConfig, class_thresholds, kept_fraction, mask_unsure
from cloud_bridge.refiner import vote
from seg_eval.sam_standin import NAME, SamStandInConfig, SimInstanceMaskGenerator, degrade
from seg_core import ConfigError
from segwire import HardFrame

H, W = 120, 160


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


# ---------------------------------------------------------------------------------------
# Depth regions
# ---------------------------------------------------------------------------------------
def flat_colour_scene(noise: float = 0.0, seed: int = 0):
    """One flat grey colour everywhere; depth: a floor plane below, a wall plane at 8 m
    above, and a box at 3 m in front of the wall. Colour alone sees nothing."""
    f = (W / 2) / np.tan(np.radians(55) / 2)
    v = (np.arange(H) - (H - 1) / 2) / f
    floor = np.where(v > 0.02, 0.5 / np.maximum(v, 1e-3), np.inf)          # camera 0.5 m above the floor
    depth = np.minimum(floor, 8.0).astype(np.float32)[:, None].repeat(W, 1)
    parts = np.where(depth < 8.0, 0, 1)                                        # 0 floor, 1 wall
    box = np.zeros((H, W), bool)
    box[20:60, 60:110] = True
    depth[box] = 3.0
    parts[box] = 2
    rng = np.random.default_rng(seed)
    rgb = np.clip(60 + rng.normal(0, noise, (H, W, 3)), 0, 255).astype(np.uint8)
    return rgb, depth, parts


def test_depth_regions_find_boundaries_where_depth_jumps_though_colour_is_flat():
    rgb, depth, parts = flat_colour_scene()
    masks = DepthRegionGenerator(DepthRegionConfig(min_area=16)).generate(rgb, depth)
    for p in range(3):   # each surface is (almost exactly) one mask
        assert max(iou(m, parts == p) for m in masks) > 0.9, f"surface {p} is not one mask"
    # The colour-only generator cannot tell them apart.
    colour = RegionProposalGenerator().generate(rgb)
    assert max(iou(m, parts == 2) for m in colour) < 0.5


def test_depth_regions_hold_on_a_dim_noisy_frame_and_without_depth_use_colour():
    rgb, depth, parts = flat_colour_scene(noise=12.0)
    assert noise_sigma(rgb[..., 0]) == pytest.approx(12.0, rel=0.3)
    masks = DepthRegionGenerator(DepthRegionConfig(min_area=16)).generate(rgb, depth)
    assert max(iou(m, parts == 2) for m in masks) > 0.85
    assert len(masks) < 30, "noise must not shatter the surfaces"
    rgb2 = rgb.copy()
    rgb2[parts == 2] = 200
    colour_only = DepthRegionGenerator(DepthRegionConfig(min_area=16)).generate(rgb2, None)
    assert max(iou(m, parts == 2) for m in colour_only) > 0.8


def test_depth_regions_take_depth_from_the_frame_and_check_it():
    rgb, depth, parts = flat_colour_scene()
    generator = DepthRegionGenerator(DepthRegionConfig(min_area=16))
    frame = HardFrame(robot_id="r", frame_uuid="00000000-0000-4000-8000-000000000001", stamp_ns=1, frame_id="c", model_version="v",
                      mining_policy="p", mining_score=1.0, rgb=rgb, depth_m=depth,
                      edge_labels=np.zeros((H, W), np.uint8))
    assert max(iou(m, parts == 2) for m in generator.masks(frame)) > 0.9
    with pytest.raises(ValueError, match="depth is"):
        generator.generate(rgb, depth[:10])
    with pytest.raises(ValueError):
        DepthRegionConfig(hfov_deg=0.0)


# ---------------------------------------------------------------------------------------
# SAM stand-in
# ---------------------------------------------------------------------------------------
def grid_instances(n: int = 4) -> np.ndarray:
    """n x n blocks of equal size, plus small 4x4 squares (area 16) in block 0."""
    inst = (np.arange(H)[:, None] * n // H) * n + (np.arange(W)[None, :] * n // W)
    inst[2:6, 2:6] = n * n
    inst[10:14, 2:6] = n * n + 1
    return inst.astype(np.int32)


OFF = dict(ragged_px=0.0, merge_probability=0.0, split_probability=0.0, miss_small_probability=0.0,
           miss_probability=0.0)


def test_standin_without_degradation_is_the_instances():
    inst = grid_instances()
    out = degrade(inst, SamStandInConfig(**OFF), key=1)
    np.testing.assert_array_equal(out, inst)


def test_standin_misses_small_objects():
    inst = grid_instances()
    out = degrade(inst, SamStandInConfig(**{**OFF, "miss_small_probability": 1.0, "small_px": 400}), key=1)
    assert (out[inst >= 16] == -1).all() and (out[inst < 16] >= 0).all()


def test_standin_merges_neighbours():
    inst = grid_instances()
    out = degrade(inst, SamStandInConfig(**{**OFF, "merge_probability": 1.0}), key=1)
    assert len(np.unique(out)) == 1          # every instance touches another: all one mask
    some = degrade(inst, SamStandInConfig(**{**OFF, "merge_probability": 0.3}), key=1)
    assert 1 < len(np.unique(some)) < len(np.unique(inst))


def test_standin_splits_large_surfaces():
    inst = np.zeros((H, W), np.int32)
    inst[:, W // 2:] = 1
    out = degrade(inst, SamStandInConfig(**{**OFF, "split_probability": 1.0, "split_area_fraction": 0.3}), key=3)
    assert len(np.unique(out)) > 2
    for piece in np.unique(out):   # pieces stay inside their instance
        assert len(np.unique(inst[out == piece])) == 1


def test_standin_boundaries_are_ragged_but_close():
    inst = np.zeros((H, W), np.int32)
    inst[:, W // 2:] = 1
    out = degrade(inst, SamStandInConfig(**{**OFF, "ragged_px": 3.0, "ragged_scale_px": 12.0}), key=2)
    changed = out != inst
    assert changed.any()
    cols = np.nonzero(changed)[1]
    assert np.abs(cols - W // 2).max() <= 4 * 3.0 * W / 640 + 2    # only near the boundary


def test_standin_is_seeded_by_frame_and_reports_its_name():
    inst = grid_instances()
    cfg = SamStandInConfig()
    np.testing.assert_array_equal(degrade(inst, cfg, 5), degrade(inst, cfg, 5))
    generator = SimInstanceMaskGenerator({5: inst}, cfg)
    assert generator.label == NAME == "sim-instance masks, SAM stand-in"
    frame = HardFrame(robot_id="r", frame_uuid="00000000-0000-4000-8000-000000000002", stamp_ns=5, frame_id="c", model_version="v",
                      mining_policy="p", mining_score=1.0, rgb=np.zeros((H, W, 3), np.uint8), depth_m=None,
                      edge_labels=np.zeros((H, W), np.uint8))
    assert isinstance(generator.masks(frame), MaskSet)
    with pytest.raises(KeyError):
        generator.masks(dataclasses.replace(frame, stamp_ns=6))
    with pytest.raises(TypeError):   # it needs the frame's identity, never just pixels
        generator.generate(frame.rgb)
    with pytest.raises(ValueError):
        SamStandInConfig(merge_probability=1.5)


# ---------------------------------------------------------------------------------------
# Votes with confidence
# ---------------------------------------------------------------------------------------
def test_probability_vote_confidence_follows_agreement():
    regions = np.zeros((H, W), np.int64)
    regions[:, W // 2:] = 1
    masks = MaskSet.from_label_image(regions)
    logits = np.zeros((3, H, W), np.float32)
    logits[0, :, : W // 2] = 5.0                               # left: clearly class 0
    logits[1, :, W // 2:] = 0.3                                # right: barely class 1
    probs = softmax(logits)
    labels, conf = probability_vote(masks, probs)
    assert (labels[:, : W // 2] == 0).all() and (labels[:, W // 2:] == 1).all()
    assert conf[:, : W // 2].min() > 200 and conf[:, W // 2:].max() < 150
    # With scores, the winners are logit_vote's.
    labels2, _ = probability_vote(masks, probs, scores=logits)
    np.testing.assert_array_equal(labels2, logit_vote(masks, logits))


def test_blended_vote_keeps_a_small_object_a_merged_mask_would_erase():
    # One mask merged a road (class 0, most of it) and a person (class 1, a small block
    # the evidence is sure of); a few road pixels are unsure between 0 and 2.
    masks = MaskSet.from_label_image(np.zeros((H, W), np.int64))
    probs = np.zeros((3, H, W), np.float32)
    probs[0] = 0.9
    probs[1] = 0.1
    person = (slice(40, 60), slice(70, 80))
    probs[:, person[0], person[1]] = np.array([0.05, 0.95, 0.0], np.float32)[:, None, None]
    unsure = (slice(0, 10), slice(0, 10))
    probs[:, unsure[0], unsure[1]] = np.array([0.45, 0.0, 0.55], np.float32)[:, None, None]
    painted, _ = probability_vote(masks, probs)
    assert (painted == 0).all()                                # the hard vote erases the person
    labels, conf = blended_vote(masks, probs, 0.5)
    assert (labels[person] == 1).all()                         # its own evidence outweighs half the mean
    assert (labels[unsure] == 0).all()                         # the mask settles the unsure pixels
    assert (labels == 1).sum() == 20 * 10 and (labels != 2).all()
    assert conf[person].min() < conf[60:, :].min()             # less sure where the mask disagrees
    # At 1 it paints like probability_vote; at 0 each pixel keeps its own argmax.
    np.testing.assert_array_equal(blended_vote(masks, probs, 1.0)[0], painted)
    np.testing.assert_array_equal(blended_vote(masks, probs, 0.0)[0], probs.argmax(0))
    # Uncovered pixels keep their own answer.
    empty = MaskSet.from_masks([], (H, W))
    np.testing.assert_array_equal(blended_vote(empty, probs, 0.5)[0], probs.argmax(0))
    with pytest.raises(ValueError, match="mask_weight"):
        blended_vote(masks, probs, 1.5)
    # The bridge's vote takes it from semantics.mask_weight and names it.
    logits = np.log(np.maximum(probs, 1e-6))
    labels2, _, name = vote(masks, np.zeros((H, W), np.uint8), None, logits, "cloud", 1.0, 0.5)
    assert name == "blended_vote(cloud, 0.5)" and (labels2[person] == 1).all()
    with pytest.raises(ConfigError, match="mask_weight"):
        SemanticsConfig(mask_weight=-0.1)


def test_majority_vote_confidence_is_the_winner_share():
    regions = np.zeros((4, 4), np.int64)
    edge = np.array([[1, 1, 1, 2]] * 4, np.uint8)
    labels, conf = majority_vote_confidence(MaskSet.from_label_image(regions), edge)
    assert (labels == 1).all() and (conf == round(0.75 * 255)).all()


# ---------------------------------------------------------------------------------------
# Class-balanced pseudo-label thresholds and the masked training labels
# ---------------------------------------------------------------------------------------
def test_class_balanced_thresholds_keep_a_share_of_every_class():
    labels = np.array([[0] * 8 + [1] * 8], np.uint8)
    # Class 0 is sure everywhere; class 1 is unsure: a global threshold would drop it whole.
    conf = np.array([[250, 240, 230, 220, 210, 200, 190, 180] + [90, 80, 70, 60, 50, 40, 30, 20]], np.uint8)
    t = class_thresholds([(labels, conf)], PseudoLabelConfig(keep_fraction=0.5, min_confidence=0.0,
                                                             max_threshold=0.9))
    assert t[0] == 220 and t[1] == 60
    masked = mask_unsure(labels, conf, t)
    assert (masked[0, :4] == 0).all() and (masked[0, 4:8] == 255).all()
    assert (masked[0, 8:12] == 1).all() and (masked[0, 12:] == 255).all()
    assert kept_fraction([(labels, conf)], t) == 0.5
    # The cap: a class the vote is sure of keeps all its sure pixels.
    capped = class_thresholds([(labels, conf)], PseudoLabelConfig(keep_fraction=0.5, max_threshold=0.8))
    assert capped[0] == 204
    # The floor: never below min_confidence.
    floor = class_thresholds([(labels, conf)], PseudoLabelConfig(keep_fraction=1.0, min_confidence=0.2))
    assert floor[1] == 51 and mask_unsure(labels, conf, floor)[0, -1] == 255
    assert mask_unsure(labels, None, t) is labels      # labels without confidence are used whole


def test_buffer_dataset_ignores_low_confidence_pixels(tmp_path):
    from cloud_bridge.replay_buffer import BufferDataset
    from cloud_bridge.sample_store import Sample, SqliteSampleStore

    labels = np.full((8, 8), 3, np.uint8)
    conf = np.full((8, 8), 250, np.uint8)
    conf[:, :3] = 10
    with SqliteSampleStore(tmp_path / "s") as store:
        store.put(Sample(frame_uuid="f1", robot_id="r", stamp_ns=1, frame_id="c", edge_model_version="v",
                         mining_policy="p", mining_score=1.0, label_source="region", refiner="x", received_at=0.0,
                         rgb=np.zeros((8, 8, 3), np.uint8), depth_m=None, edge_labels=labels, labels=labels,
                         label_confidence=conf))
        thresholds = class_thresholds([(labels, conf)], PseudoLabelConfig(keep_fraction=0.5))
        masked = BufferDataset(store, ["f1"], 30, thresholds=thresholds)[0].labels
        assert (masked[:, :3] == 255).all() and (masked[:, 3:] == 3).all()
        assert (BufferDataset(store, ["f1"], 30)[0].labels == 3).all()


def test_confidence_masked_loss_ignores_low_confidence_pixels():
    """What reaches the loss: ignore pixels contribute no gradient."""
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 255], [255, 255]]])
    torch.nn.CrossEntropyLoss(ignore_index=255)(logits, target).backward()
    assert logits.grad[0, :, 0, 0].abs().sum() > 0 and logits.grad[0, :, 1, :].abs().sum() == 0


# ---------------------------------------------------------------------------------------
# Photometric augmentation
# ---------------------------------------------------------------------------------------
def test_photometric_augmentation_darkens_adds_noise_and_keeps_labels():
    from segdata import PhotometricConfig, Sample
    from segdata.augment import photometric

    rng = np.random.default_rng(0)
    rgb = np.full((H, W, 3), 150, np.uint8)
    labels = rng.integers(0, 30, (H, W)).astype(np.uint8)
    s = Sample(rgb, np.full((H, W), 5.0, np.float32), labels, "x")
    dark = photometric(s, np.random.default_rng(1), PhotometricConfig(exposure=(0.05, 0.05), target=(0.02, 0.02),
                                                                       read_noise=0.01, shot_noise=0.02,
                                                                       depth_holes=(0.1, 0.1)))
    assert dark.rgb.mean() < 120 and dark.rgb.std() > 2
    np.testing.assert_array_equal(dark.labels, labels)
    assert (dark.depth_m == 0).mean() > 0.02 and np.abs(dark.depth_m[dark.depth_m > 0] - 5).max() < 0.5
    again = photometric(s, np.random.default_rng(1), PhotometricConfig(exposure=(0.05, 0.05), target=(0.02, 0.02),
                                                                        read_noise=0.01, shot_noise=0.02,
                                                                        depth_holes=(0.1, 0.1)))
    np.testing.assert_array_equal(again.rgb, dark.rgb)


# ---------------------------------------------------------------------------------------
# The cloud model: evidence, provenance in each sample
# ---------------------------------------------------------------------------------------
def test_evidence_mixes_probabilities():
    a = np.zeros((2, 1, 1), np.float32)
    a[0] = 4.0
    b = np.zeros((2, 1, 1), np.float32)
    b[1] = 4.0
    pa, pb = softmax(a), softmax(b)
    np.testing.assert_allclose(evidence(a, b, "combined", 0.25), 0.75 * pa + 0.25 * pb, rtol=1e-6)
    np.testing.assert_allclose(evidence(a, b, "cloud", 0.25), pb)
    np.testing.assert_allclose(evidence(a, None, "combined", 0.25), pa)
    with pytest.raises(ValueError):
        SemanticsConfig(mode="both")


@pytest.fixture(scope="module")
def cloud_checkpoint(tmp_path_factory):
    from rfnet.checkpoint import save_checkpoint
    from rfnet.network import RFNet

    torch.manual_seed(3)
    path = save_checkpoint(RFNet(), tmp_path_factory.mktemp("cloud") / "cloud.pth")
    write_provenance(path, {"trained_on": {"task": "daylight_campus", "split": "train", "frames": 240}})
    return path


def test_cloud_model_provenance_is_stored_with_each_sample(cloud_checkpoint, tmp_path):
    from cloud_bridge.config import BridgeConfig, ModelsConfig
    from cloud_bridge.mask_generators import MaskGeneratorConfig
    from cloud_bridge.refiner import build_refiner
    from cloud_bridge.sample_store import SqliteSampleStore
    from cloud_bridge.service import BridgeService
    from rfnet.checkpoint import model_version
    from seg_harness.synthetic_camera import synthetic_frame

    config = BridgeConfig(storage_dir=str(tmp_path / "bridge"), models=ModelsConfig(cache_dir=str(tmp_path / "c")),
                          refinement=MaskGeneratorConfig(fallback="regions"),
                          semantics=SemanticsConfig(mode="combined", cloud_model=CloudModelConfig(
                              str(cloud_checkpoint), 64, 96, cache_dir=str(tmp_path / "c"))))
    refiner = build_refiner(config)
    assert refiner.mode == "combined" and "cloud model" in refiner.describe()
    rgb, depth = synthetic_frame(3, H, W)
    frame = HardFrame(robot_id="dog1", frame_uuid="00000000-0000-4000-8000-000000000003", stamp_ns=7, frame_id="camera", model_version="unknownvrsn",
                      mining_policy="random", mining_score=1.0, rgb=rgb, depth_m=depth,
                      edge_labels=np.full((H, W), 7, np.uint8))
    out = refiner.refine(frame)
    assert out.refiner == "regions_felzenszwalb+vote(edge_labels+cloud)"
    assert out.confidence.shape == (H, W) and out.confidence.dtype == np.uint8
    version = model_version(cloud_checkpoint)
    assert out.tags["cloud_model"] == version
    assert json.loads(out.tags["cloud_model_provenance"])["trained_on"]["task"] == "daylight_campus"

    # Through the service's store path, unchanged.
    with SqliteSampleStore(tmp_path / "store") as store:
        service = BridgeService(config, store, refiner)
        try:
            from segwire import encode_hard_frame, hard_topic
            service._process(hard_topic("dog1"), encode_hard_frame(frame))
        finally:
            service.client.loop_stop()
        stored = store.get("00000000-0000-4000-8000-000000000003")
    assert stored.tags["cloud_model"] == version and "daylight_campus" in stored.tags["cloud_model_provenance"]
    assert stored.label_confidence is not None and stored.label_confidence.shape == (H, W)


def test_without_masks_each_pixel_keeps_the_cloud_models_answer(cloud_checkpoint, tmp_path):
    from cloud_bridge.config import BridgeConfig, ModelsConfig
    from cloud_bridge.mask_generators import MaskGeneratorConfig
    from cloud_bridge.refiner import build_refiner
    from seg_harness.synthetic_camera import synthetic_frame

    cloud = CloudModelConfig(str(cloud_checkpoint), 64, 96, cache_dir=str(tmp_path / "c"))
    config = BridgeConfig(storage_dir=str(tmp_path / "bridge"), models=ModelsConfig(cache_dir=str(tmp_path / "c")),
                          refinement=MaskGeneratorConfig(fallback="none"),
                          semantics=SemanticsConfig(mode="cloud", cloud_model=cloud))
    rgb, depth = synthetic_frame(4, H, W)
    frame = HardFrame(robot_id="dog1", frame_uuid="00000000-0000-4000-8000-000000000004", stamp_ns=8,
                      frame_id="camera", model_version="unknownvrsn", mining_policy="random", mining_score=1.0,
                      rgb=rgb, depth_m=depth, edge_labels=np.full((H, W), 7, np.uint8))
    out = build_refiner(config).refine(frame)
    assert out.refiner == "no_masks+vote(cloud)" and out.label_source == "region"
    logits = CloudModel(cloud).logits(rgb, depth)
    np.testing.assert_array_equal(out.labels, logits.argmax(0))
    assert out.confidence.shape == (H, W)


def test_missing_cloud_model_is_a_clear_error(tmp_path):
    from cloud_bridge.cloud_semantics import CloudModelError

    with pytest.raises(CloudModelError, match="does not exist"):
        CloudModel(CloudModelConfig(str(tmp_path / "nope.pth")))


def test_cloud_model_without_provenance_says_unknown(tmp_path, cloud_checkpoint):
    import shutil

    bare = tmp_path / "bare.pth"
    shutil.copy(cloud_checkpoint, bare)
    model = CloudModel(CloudModelConfig(str(bare), 64, 96, cache_dir=str(tmp_path / "c")))
    assert "unknown" in json.loads(model.tags()["cloud_model_provenance"])
    assert model.logits(np.zeros((H, W, 3), np.uint8), None).shape == (30, H, W)

"""Tests for cloud_bridge.mask_generators: weights-free region proposals, Segment
Anything's automatic mask generator end to end on a tiny random-weight SAM (masks into
both votes), checkpoint and device errors, and the choice between the two.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python -m pytest tests/unit/test_mask_generators.py -q
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cloud_bridge.fusion import MaskSet, logit_vote, majority_vote
from cloud_bridge.mask_generators import (MaskGeneratorConfig, MaskGeneratorError,
                                          RegionProposalConfig, RegionProposalGenerator,
                                          SamConfig, SamMaskGenerator, build_mask_generator,
                                          load_sam)
from seg_harness.tiny_sam import build_tiny_sam, tiny_sam_config

H, W = 60, 80


def three_blocks(noise: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of three flat colour blocks with mild noise, and its block map."""
    blocks = np.zeros((H, W), np.int64)
    blocks[H // 2:, : W // 2] = 1
    blocks[H // 2:, W // 2:] = 2
    colours = np.array([(200, 40, 40), (40, 190, 60), (50, 60, 210)], np.float64)
    noisy = colours[blocks] + np.random.default_rng(seed).normal(0, noise, (H, W, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), blocks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


# ---------------------------------------------------------------------------------------
# Region proposals
# ---------------------------------------------------------------------------------------
def test_felzenszwalb_masks_align_with_colour_blocks():
    rgb, blocks = three_blocks()
    masks = RegionProposalGenerator(RegionProposalConfig(min_area=20)).generate(rgb)
    assert isinstance(masks, MaskSet) and masks.shape == (H, W)
    assert list(masks.areas) == sorted(masks.areas, reverse=True)
    # The blocks are the three largest masks; smoothing (sigma 0.8) can leave thin
    # strips of blended colour along block edges as extra small segments.
    assert 3 <= len(masks) <= 6 and masks.areas[3:].sum() < 0.1 * H * W
    largest = [masks.mask(i) for i in range(3)]
    for b in range(3):
        assert max(iou(m, blocks == b) for m in largest) > 0.95
    assert iou(largest[0], blocks == 0) > 0.95  # the top half is the largest block
    assert largest[0].sum() == masks.areas[0]


def test_slic_segments_stay_inside_blocks():
    rgb, blocks = three_blocks()
    config = RegionProposalConfig(method="slic", n_segments=12, compactness=10, min_area=1)
    masks = RegionProposalGenerator(config).generate(rgb)
    assert len(masks) >= 3
    assert list(masks.areas) == sorted(masks.areas, reverse=True)
    for m in masks:
        assert np.bincount(blocks[m], minlength=3).max() >= 0.95 * m.sum()
    assert masks.covered().all()  # min_area 1: every pixel is in some segment


def test_region_vote_cleans_noisy_edge_labels():
    rgb, blocks = three_blocks()
    rng = np.random.default_rng(1)
    edge = np.array([7, 3, 11], np.uint8)[blocks]
    flip = rng.random((H, W)) < 0.2
    edge[flip] = rng.choice(np.array([0, 5, 255], np.uint8), flip.sum())
    # light smoothing: no blended strips along the sharp synthetic block edges
    masks = RegionProposalGenerator(RegionProposalConfig(sigma=0.3, min_area=20)).generate(rgb)
    refined = majority_vote(masks, edge)
    assert (refined == np.array([7, 3, 11])[blocks]).mean() > 0.995
    assert (edge == np.array([7, 3, 11])[blocks]).mean() < 0.85


def test_tiny_segments_are_left_uncovered():
    rgb, _ = three_blocks(noise=0)
    rgb[5:7, 5:7] = (255, 255, 255)  # a 4-pixel speck felzenszwalb keeps (min_size 1)
    config = RegionProposalConfig(sigma=0, min_size=1, min_area=10)
    masks = RegionProposalGenerator(config).generate(rgb)
    assert len(masks) == 3
    uncovered = ~masks.covered()
    assert uncovered[5:7, 5:7].all() and uncovered.sum() == 4


@pytest.mark.parametrize("bad", [
    np.zeros((H, W), np.uint8),
    np.zeros((H, W, 4), np.uint8),
    np.zeros((H, W, 3), np.float32),
    np.zeros((0, W, 3), np.uint8),
])
def test_generators_reject_non_rgb_input(bad, tiny_sam_generator):
    for generator in (RegionProposalGenerator(), tiny_sam_generator):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
            generator.generate(bad)


@pytest.mark.parametrize("kwargs", [
    dict(method="watershed"), dict(scale=0), dict(min_size=0), dict(n_segments=0),
    dict(min_area=0),
])
def test_region_config_validation(kwargs):
    with pytest.raises(ValueError):
        RegionProposalConfig(**kwargs)


# ---------------------------------------------------------------------------------------
# SAM on a tiny random-weight model
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam(seed=0)


@pytest.fixture(scope="module")
def tiny_sam_generator(tiny_sam):
    return SamMaskGenerator(tiny_sam, tiny_sam_config())


@pytest.fixture(scope="module")
def sam_masks(tiny_sam_generator):
    rgb, _ = three_blocks()
    return tiny_sam_generator.generate(rgb)


def test_tiny_sam_masks_come_out_as_bool_images(sam_masks):
    assert isinstance(sam_masks, MaskSet) and sam_masks.shape == (H, W)
    assert len(sam_masks) >= 1  # thresholds at 0: random weights still give masks
    assert list(sam_masks.areas) == sorted(sam_masks.areas, reverse=True)
    for m in sam_masks:
        assert m.dtype == np.bool_ and m.shape == (H, W) and m.any()


def test_tiny_sam_masks_flow_through_both_votes(sam_masks):
    rng = np.random.default_rng(2)
    n_classes = 6
    logits = rng.standard_normal((n_classes, H, W)).astype(np.float32)
    labels = logit_vote(sam_masks, logits)
    assert labels.dtype == np.uint8 and labels.shape == (H, W)
    assert labels.max() < n_classes
    covered = sam_masks.covered()
    np.testing.assert_array_equal(labels[~covered], logits.argmax(axis=0)[~covered])
    # Each pixel ends up with its owner mask's single class: the smallest mask painted
    # last is uniform.
    assert len(np.unique(labels[sam_masks.mask(len(sam_masks) - 1)])) == 1

    edge = logits.argmax(axis=0).astype(np.uint8)
    edge[:5] = 255
    labels = majority_vote(list(sam_masks), edge)  # plain bool arrays work as well
    assert labels.dtype == np.uint8 and labels.shape == (H, W)
    assert set(np.unique(labels)) <= set(np.unique(edge))
    np.testing.assert_array_equal(labels, majority_vote(sam_masks, edge))


def test_tiny_sam_is_deterministic_per_seed(tiny_sam):
    a, b = build_tiny_sam(seed=0), build_tiny_sam(seed=1)
    same = build_tiny_sam(seed=0)
    key = "image_encoder.patch_embed.proj.weight"
    assert torch.equal(a.state_dict()[key], same.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], b.state_dict()[key])


# ---------------------------------------------------------------------------------------
# Checkpoints and devices
# ---------------------------------------------------------------------------------------
def test_missing_checkpoint(tmp_path):
    missing = tmp_path / "sam_vit_h_4b8939.pth"
    with pytest.raises(MaskGeneratorError, match="does not exist.*sam_vit_h_4b8939.pth"):
        load_sam(missing, "vit_h")
    config = MaskGeneratorConfig(sam=SamConfig(checkpoint=missing))
    with pytest.raises(MaskGeneratorError, match="does not exist"):
        build_mask_generator(config)


def test_checkpoint_of_another_variant(tmp_path, tiny_sam):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    with pytest.raises(MaskGeneratorError,
                       match=r"checkpoint .*tiny.pth does not fit model_type vit_b.*"
                             r"vit_b is sam_vit_b_01ec64.pth"):
        load_sam(path, "vit_b")


def test_unreadable_and_foreign_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(MaskGeneratorError, match="could not read SAM checkpoint"):
        load_sam(garbage, "vit_b")
    foreign = tmp_path / "rfnet.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(MaskGeneratorError, match="not a Segment Anything checkpoint"):
        load_sam(foreign, "vit_b")


@pytest.fixture(scope="module")
def vit_b_state():
    """A random-weight vit_b in the official checkpoint layout (a plain state dict)."""
    from segment_anything import sam_model_registry

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return sam_model_registry["vit_b"]().state_dict()


def test_official_layout_checkpoint_loads(tmp_path, vit_b_state, caplog):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(vit_b_state, path)
    config = MaskGeneratorConfig(sam=SamConfig(checkpoint=str(path), model_type="vit_b"))
    with caplog.at_level(logging.WARNING):
        generator = build_mask_generator(config)
    assert isinstance(generator, SamMaskGenerator) and generator.name == "sam_vit_b"
    assert not caplog.records
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(generator._amg.predictor.model.state_dict()[key], vit_b_state[key])
    with pytest.raises(MaskGeneratorError, match="it is a vit_b checkpoint.*vit_h is"):
        load_sam(path, "vit_h")


def test_damaged_checkpoint_fails_at_state_dict_load(tmp_path, vit_b_state):
    path = tmp_path / "partial.pth"
    partial = {k: v for k, v in vit_b_state.items() if k.startswith("image_encoder.pos")}
    torch.save(partial, path)  # right encoder width, everything else missing
    with pytest.raises(MaskGeneratorError,
                       match=r"does not fit model_type vit_b.*\d+ missing keys \(e\.g\. "):
        load_sam(path, "vit_b")


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda(monkeypatch, tiny_sam, tmp_path, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MaskGeneratorError, match="CUDA is not available"):
        SamMaskGenerator(tiny_sam, tiny_sam_config(device=device))
    # checked before the (possibly multi-GB) checkpoint is touched
    config = SamConfig(checkpoint=tmp_path / "absent.pth", device=device)
    with pytest.raises(MaskGeneratorError, match="CUDA is not available"):
        SamMaskGenerator.from_checkpoint(config)


@pytest.mark.parametrize("device, message", [
    ("gpu0", "not a device name"), ("mps", "only cpu and cuda"),
])
def test_bad_device_names(tiny_sam, device, message):
    with pytest.raises(MaskGeneratorError, match=message):
        SamMaskGenerator(tiny_sam, tiny_sam_config(device=device))


@pytest.mark.parametrize("kwargs", [
    dict(model_type="vit_x"), dict(points_per_side=0), dict(pred_iou_thresh=1.5),
    dict(stability_score_thresh=-0.1), dict(min_mask_region_area=-1),
])
def test_sam_config_validation(kwargs):
    with pytest.raises(ValueError):
        SamConfig(**kwargs)


# ---------------------------------------------------------------------------------------
# Choice between the two
# ---------------------------------------------------------------------------------------
def test_no_checkpoint_falls_back_to_weights_free_masks_loudly(caplog):
    from cloud_bridge.depth_regions import DepthRegionGenerator

    with caplog.at_level(logging.WARNING, logger="cloud_bridge.mask_generators"):
        generator = build_mask_generator(MaskGeneratorConfig())
    assert isinstance(generator, RegionProposalGenerator) and generator.name == "regions_felzenszwalb"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "No SAM checkpoint configured" in message and "LOWER QUALITY" in message
    assert message.count("\n") >= 3

    generator = build_mask_generator(MaskGeneratorConfig(fallback="depth_regions"))
    assert isinstance(generator, DepthRegionGenerator) and generator.name == "depth_regions"
    config = MaskGeneratorConfig(fallback="regions", regions=RegionProposalConfig(method="slic"))
    assert build_mask_generator(config).name == "regions_slic"
    assert build_mask_generator(MaskGeneratorConfig(fallback="none")).name == "no_masks"
    with pytest.raises(ValueError, match="fallback"):
        MaskGeneratorConfig(fallback="watershed")

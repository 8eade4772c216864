"""Tests for cloud_bridge.fusion: the logit and majority votes of masks over the edge
model's evidence, the MaskSet representation, and equivalence of the fast
segment-interval implementation with an obvious per-mask reference.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python -m pytest tests/unit/test_fusion.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cloud_bridge.fusion import MaskSet, logit_vote, majority_vote
from seg_harness.vote_benchmark import benchmark_masks, vote_benchmark


# ---------------------------------------------------------------------------------------
# Reference: the rule as written, one mask at a time
# ---------------------------------------------------------------------------------------
def by_area(masks):
    return sorted(masks, key=lambda m: -int(m.sum()))  # stable: equal areas keep order


def ref_logit_vote(masks, logits):
    out = logits.argmax(axis=0).astype(np.uint8)
    for m in by_area(masks):
        if m.any():
            out[m] = logits[:, m].astype(np.float64).sum(axis=1).argmax()
    return out


def ref_majority_vote(masks, edge, ignore_label=255):
    out = edge.copy()
    for m in by_area(masks):
        votes = edge[m]
        if ignore_label is not None:
            votes = votes[votes != ignore_label]
        if m.any():
            out[m] = np.bincount(votes, minlength=256).argmax() if len(votes) else ignore_label
    return out


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def one_hot_logits(labels, n_classes, scale=1.0):
    """Logits whose per-pixel argmax is ``labels``."""
    logits = np.zeros((n_classes,) + labels.shape, dtype=np.float32)
    np.put_along_axis(logits, labels[None].astype(np.int64), scale, axis=0)
    return logits


# ---------------------------------------------------------------------------------------
# Constructed cases
# ---------------------------------------------------------------------------------------
SHAPE = (4, 6)


def test_nested_small_mask_overwrites_large():
    big = np.ones(SHAPE, bool)
    small = box(SHAPE, 1, 3, 1, 3)
    edge = np.full(SHAPE, 1, np.uint8)
    edge[1:3, 1:3] = 2  # 4 pixels of class 2 inside 24 pixels: big mask stays class 1
    expected = edge.copy()
    for masks in ([big, small], [small, big]):  # given order does not matter, area does
        np.testing.assert_array_equal(majority_vote(masks, edge), expected)
        np.testing.assert_array_equal(logit_vote(masks, one_hot_logits(edge, 3)), expected)


def test_overlapping_masks_vote_with_all_their_pixels():
    # a: columns 0-3 (16 px), b: columns 3-5 (12 px), overlap column 3.
    a, b = box(SHAPE, 0, 4, 0, 4), box(SHAPE, 0, 4, 3, 6)
    edge = np.zeros(SHAPE, np.uint8)
    edge[:, 3:] = 5  # b's pixels are all 5; a has 12 x 0 and 4 x 5
    expected = np.zeros(SHAPE, np.uint8)
    expected[:, 3:] = 5  # the overlap belongs to the smaller mask b
    np.testing.assert_array_equal(majority_vote([a, b], edge), expected)
    np.testing.assert_array_equal(logit_vote([a, b], one_hot_logits(edge, 6)), expected)

    # The overlap column counts for both: b wins 7 of its 12 pixels only thanks to it.
    edge = np.zeros(SHAPE, np.uint8)
    edge[:, 3] = 5
    edge[:3, 4] = 5
    expected = np.zeros(SHAPE, np.uint8)
    expected[:, 3:] = 5
    np.testing.assert_array_equal(majority_vote([a, b], edge), expected)


def test_uncovered_pixels_keep_the_edge_answer():
    edge = np.arange(24, dtype=np.uint8).reshape(SHAPE) % 7
    edge[0, 0] = 255
    mask = box(SHAPE, 2, 4, 2, 6)
    out = majority_vote([mask], edge)
    np.testing.assert_array_equal(out[~mask], edge[~mask])
    assert out[0, 0] == 255
    assert len(np.unique(out[mask])) == 1

    logits = np.random.default_rng(1).standard_normal((7,) + SHAPE).astype(np.float32)
    out = logit_vote([mask], logits)
    np.testing.assert_array_equal(out[~mask], logits.argmax(axis=0)[~mask])


def test_logit_sum_beats_pixel_majority():
    # Three pixels: class 0 narrowly ahead in two, class 1 far ahead in one.
    logits = np.zeros((2, 1, 3), np.float32)
    logits[:, 0, 0] = logits[:, 0, 1] = (1.0, 0.9)
    logits[:, 0, 2] = (0.0, 5.0)
    edge = logits.argmax(axis=0).astype(np.uint8)
    np.testing.assert_array_equal(edge, [[0, 0, 1]])
    everything = [np.ones((1, 3), bool)]
    np.testing.assert_array_equal(logit_vote(everything, logits), [[1, 1, 1]])
    np.testing.assert_array_equal(majority_vote(everything, edge), [[0, 0, 0]])


def test_ignore_label_does_not_vote():
    edge = np.array([[3, 255, 255, 255, 5, 5]], np.uint8)
    out = majority_vote([np.ones((1, 6), bool)], edge)
    np.testing.assert_array_equal(out, np.full((1, 6), 5))
    # with ignoring disabled, 255 is a class like any other and wins here
    out = majority_vote([np.ones((1, 6), bool)], edge, ignore_label=None)
    np.testing.assert_array_equal(out, np.full((1, 6), 255))
    # another ignore id
    out = majority_vote([np.ones((1, 6), bool)], edge, ignore_label=5)
    np.testing.assert_array_equal(out, np.full((1, 6), 255))


def test_mask_with_only_ignored_pixels_keeps_them():
    edge = np.array([[2, 2, 255, 255, 2, 7]], np.uint8)
    big, small = np.ones((1, 6), bool), box((1, 6), 0, 1, 2, 4)
    out = majority_vote([big, small], edge)
    np.testing.assert_array_equal(out, [[2, 2, 255, 255, 2, 2]])


def test_ties_go_to_the_smaller_class_id():
    edge = np.array([[4, 4, 1, 1, 9]], np.uint8)
    edge_mask = box((1, 5), 0, 1, 0, 4)
    np.testing.assert_array_equal(majority_vote([edge_mask], edge), [[1, 1, 1, 1, 9]])

    logits = np.zeros((5, 1, 2), np.float32)
    logits[4] = 1.0
    logits[2] = (0.5, 1.5)  # sums: class 2 = 2.0 = class 4
    np.testing.assert_array_equal(logit_vote([np.ones((1, 2), bool)], logits), [[2, 2]])


def test_equal_areas_later_mask_is_painted_last():
    left, right = box((1, 4), 0, 1, 0, 3), box((1, 4), 0, 1, 1, 4)
    edge = np.array([[1, 1, 2, 2]], np.uint8)
    # left: 1,1,2 -> 1; right: 1,2,2 -> 2; both 3 px, so the later one owns the overlap
    np.testing.assert_array_equal(majority_vote([left, right], edge), [[1, 2, 2, 2]])
    np.testing.assert_array_equal(majority_vote([right, left], edge), [[1, 1, 1, 2]])


def test_empty_mask_list_returns_the_edge_answer():
    edge = np.random.default_rng(2).integers(0, 9, SHAPE).astype(np.uint8)
    out = majority_vote([], edge)
    np.testing.assert_array_equal(out, edge)
    assert out is not edge and out.dtype == np.uint8
    logits = np.random.default_rng(3).standard_normal((9,) + SHAPE).astype(np.float32)
    out = logit_vote([], logits)
    np.testing.assert_array_equal(out, logits.argmax(axis=0))
    assert out.dtype == np.uint8 and out.shape == SHAPE
    empty_masks = [np.zeros(SHAPE, bool)]  # masks without pixels change nothing either
    np.testing.assert_array_equal(majority_vote(empty_masks, edge), edge)


def test_logits_as_torch_tensor_and_float16():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((5,) + SHAPE).astype(np.float32)
    masks = [box(SHAPE, 0, 3, 0, 3), box(SHAPE, 1, 4, 2, 6)]
    expected = ref_logit_vote(masks, logits)
    np.testing.assert_array_equal(logit_vote(masks, torch.from_numpy(logits)), expected)
    np.testing.assert_array_equal(logit_vote(masks, logits.astype(np.float64)), expected)
    halves = logits.astype(np.float16)
    np.testing.assert_array_equal(logit_vote(masks, halves),
                                  ref_logit_vote(masks, halves.astype(np.float32)))


def test_integer_edge_labels_are_accepted_when_in_range():
    edge = np.array([[1, 1, 2]], np.int64)
    np.testing.assert_array_equal(majority_vote([np.ones((1, 3), bool)], edge), [[1, 1, 1]])


@pytest.mark.parametrize("bad_mask, message", [
    (np.ones((4, 5), bool), r"mask 1 has shape \(4, 5\), expected \(4, 6\)"),
    (np.ones((4, 6, 1), bool), r"mask 1 has shape \(4, 6, 1\)"),
    (np.ones(SHAPE, np.uint8), r"mask 1 has dtype uint8, expected bool"),
])
def test_bad_masks_are_rejected(bad_mask, message):
    masks = [np.ones(SHAPE, bool), bad_mask]
    with pytest.raises(ValueError, match=message):
        majority_vote(masks, np.zeros(SHAPE, np.uint8))
    with pytest.raises(ValueError, match=message):
        logit_vote(masks, np.zeros((3,) + SHAPE, np.float32))


def test_bad_evidence_is_rejected():
    masks = [np.ones(SHAPE, bool)]
    with pytest.raises(ValueError, match="masks are"):
        majority_vote(MaskSet.from_masks(masks), np.zeros((4, 7), np.uint8))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        logit_vote(masks, np.zeros(SHAPE, np.float32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        logit_vote(masks, np.zeros((257,) + SHAPE, np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        majority_vote(masks, np.zeros((1,) + SHAPE, np.uint8))
    with pytest.raises(ValueError, match="uint8 class ids"):
        majority_vote(masks, np.full(SHAPE, 300))
    with pytest.raises(ValueError, match="uint8 class ids"):
        majority_vote(masks, np.zeros(SHAPE, np.float32))
    with pytest.raises(ValueError, match="ignore_label"):
        majority_vote(masks, np.zeros(SHAPE, np.uint8), ignore_label=256)
    nan_logits = np.zeros((3,) + SHAPE, np.float32)
    nan_logits[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        logit_vote(masks, nan_logits)  # NaN inside a mask
    with pytest.raises(ValueError, match="NaN or inf"):
        logit_vote([], nan_logits)  # NaN in an uncovered pixel


# ---------------------------------------------------------------------------------------
# MaskSet
# ---------------------------------------------------------------------------------------
def test_mask_set_round_trip_sorted_by_area():
    rng = np.random.default_rng(5)
    masks = [rng.random((9, 11)) < p for p in (0.1, 0.6, 0.3, 0.0)]
    masks.append(np.ones((9, 11), bool))
    mask_set = MaskSet.from_masks(masks)
    assert len(mask_set) == 4  # the empty one is dropped
    expected = by_area([m for m in masks if m.any()])
    for got, want in zip(mask_set, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mask_set.areas, [m.sum() for m in expected])
    np.testing.assert_array_equal(mask_set.covered(), np.logical_or.reduce(masks))
    with pytest.raises(IndexError):
        mask_set.mask(4)


def test_mask_set_accepts_non_contiguous_masks():
    m = np.zeros((6, 5), bool)
    m[1:4, 2] = True
    mask_set = MaskSet.from_masks([m.T.copy().T])  # Fortran order, as SAM returns them
    np.testing.assert_array_equal(mask_set.mask(0), m)


def test_mask_set_from_label_image_drops_small_regions():
    regions = np.zeros((4, 6), np.int32)
    regions[:, 4:] = 7
    regions[0, 0] = 3  # a 1-pixel region; region 0 keeps 15 pixels, region 7 has 8
    mask_set = MaskSet.from_label_image(regions, min_area=2)
    assert len(mask_set) == 2
    np.testing.assert_array_equal(mask_set.mask(0), regions == 0)
    np.testing.assert_array_equal(mask_set.mask(1), regions == 7)
    assert not mask_set.covered()[0, 0]
    edge = np.full((4, 6), 4, np.uint8)
    edge[0, 0] = 9
    assert majority_vote(mask_set, edge)[0, 0] == 9


def test_empty_list_needs_a_shape():
    with pytest.raises(ValueError, match="explicit shape"):
        MaskSet.from_masks([])
    assert len(MaskSet.from_masks([], shape=(3, 4))) == 0


# ---------------------------------------------------------------------------------------
# Properties and equivalence with the reference
# ---------------------------------------------------------------------------------------
small_logits = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 7)),
    elements=st.floats(-100, 100, width=32))


@settings(max_examples=60, deadline=None)
@given(small_logits)
def test_one_full_mask_takes_the_argmax_of_summed_logits(logits):
    out = logit_vote([np.ones(logits.shape[1:], bool)], logits)
    assert len(np.unique(out)) == 1 and out[0, 0] < logits.shape[0]
    # The vote sums float32 logits in float32; where classes tie up to that rounding,
    # either may win.
    sums = logits.astype(np.float64).sum(axis=(1, 2))
    rounding = 1e-6 * np.abs(logits).astype(np.float64).sum()
    assert sums[out[0, 0]] >= sums.max() - rounding
    ranked = np.sort(sums)
    if len(ranked) == 1 or ranked[-1] - ranked[-2] > rounding:
        assert out[0, 0] == sums.argmax()


@st.composite
def masks_and_evidence(draw):
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    n_classes = draw(st.integers(1, 5))
    masks = draw(st.lists(hnp.arrays(bool, (h, w)), max_size=6))
    # quarter steps: sums are exact in float32 and float64, so ties really happen
    logits = draw(hnp.arrays(np.int8, (n_classes, h, w), elements=st.integers(-8, 8)))
    edge = draw(hnp.arrays(np.uint8, (h, w),
                           elements=st.sampled_from([0, 1, 2, 3, 200, 255])))
    return masks, logits.astype(np.float32) / 4, edge


@settings(max_examples=200, deadline=None)
@given(masks_and_evidence())
def test_votes_match_the_reference(case):
    masks, logits, edge = case
    np.testing.assert_array_equal(logit_vote(masks, logits), ref_logit_vote(masks, logits))
    np.testing.assert_array_equal(majority_vote(masks, edge), ref_majority_vote(masks, edge))
    np.testing.assert_array_equal(majority_vote(masks, edge, ignore_label=None),
                                  ref_majority_vote(masks, edge, ignore_label=None))
    # the majority vote only ever writes labels that were there
    assert set(np.unique(majority_vote(masks, edge))) <= set(np.unique(edge))


@pytest.mark.parametrize("seed", range(3))
def test_votes_match_the_reference_on_realistic_masks(seed):
    rng = np.random.default_rng(seed)
    h, w, n_classes = 60, 80, 12
    masks = benchmark_masks(h, w, 40, rng)
    logits = rng.standard_normal((n_classes, h, w)).astype(np.float32)
    edge = logits.argmax(axis=0).astype(np.uint8)
    edge[rng.random((h, w)) < 0.1] = 255
    np.testing.assert_array_equal(logit_vote(masks, logits), ref_logit_vote(masks, logits))
    np.testing.assert_array_equal(majority_vote(masks, edge), ref_majority_vote(masks, edge))
    mask_set = MaskSet.from_masks(masks)
    np.testing.assert_array_equal(logit_vote(mask_set, logits), ref_logit_vote(masks, logits))


def test_uncovered_argmax_paths_agree():
    # few uncovered pixels are gathered, many go through the column maximum
    rng = np.random.default_rng(6)
    logits = rng.integers(-3, 3, (7, 20, 30)).astype(np.float32)  # many exact ties
    for mask in (box((20, 30), 0, 19, 0, 30), box((20, 30), 0, 2, 0, 30)):
        np.testing.assert_array_equal(logit_vote([mask], logits),
                                      ref_logit_vote([mask], logits))


def test_vote_benchmark_reports_timings():
    result = vote_benchmark(h=48, w=64, n_masks=10, n_classes=5, repeats=2)
    for key in ("ms_p50", "ms_p90", "majority_ms_p50", "from_bool_masks_ms_p50"):
        assert result[key] > 0
    assert 1.0 < result["coverage"] < 4.0

"""seg_eval: Ianvs-defined metrics on hand-computed cases, and the self-contained report."""
from __future__ import annotations

import base64
import io
import json
import math
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segmetrics import ConfusionMatrix, bwt, fwt, latency_percentiles, samples_transfer_ratio
from seg_eval.report import write_report

IGNORE = 255


# ---------------------------------------------------------------- confusion matrix

def hand_built() -> ConfusionMatrix:
    # Pixels (gt, pred): (0,0) (0,0) (0,1) (1,1) (1,2) and two ignored ones, one of them
    # predicted as class 3. Counted: m[0,0]=2, m[0,1]=1, m[1,1]=1, m[1,2]=1.
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 0, 1, 1, 2, 3, 0]], np.int64),
              np.array([[0, 0, 0, 1, 1, IGNORE, IGNORE]], np.uint8))
    return cm


def test_iou_hand_built():
    cm = hand_built()
    assert cm.matrix.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    iou = cm.iou_per_class()
    # class 0: TP 2 / (row 3 + col 2 - 2) = 2/3;  class 1: 1 / (2 + 2 - 1) = 1/3
    # class 2: only predicted -> 0 / (0 + 1 - 0) = 0, and it counts in the mean
    # class 3: predicted only at an ignored pixel -> absent from both -> NaN, left out
    assert iou[:3] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)  # 3 correct of 5 labelled pixels


def test_all_ignore_frame_adds_nothing():
    cm = hand_built()
    cm.update(np.full((2, 3), 7), np.full((2, 3), IGNORE))  # pred 7 > classes, but ignored
    assert cm.matrix.tolist() == hand_built().matrix.tolist()


def naive_matrix(pred: np.ndarray, gt: np.ndarray, c: int) -> np.ndarray:
    m = np.zeros((c, c), np.int64)
    for p, g in zip(pred.ravel(), gt.ravel()):
        if g != IGNORE:
            m[g, p] += 1
    return m


def test_merge_equals_update_on_concatenation():
    rng = np.random.default_rng(0)
    c = 5
    gts = [np.where(rng.random((6, 7)) < 0.2, IGNORE, rng.integers(0, c, (6, 7))) for _ in range(3)]
    preds = [rng.integers(0, c, (6, 7)) for _ in range(3)]
    parts = []
    for p, g in zip(preds, gts):
        cm = ConfusionMatrix(c)
        cm.update(p, g)
        parts.append(cm)
    merged = ConfusionMatrix(c).merge(parts[0]).merge(parts[1]).merge(parts[2])
    whole = ConfusionMatrix(c)
    whole.update(np.concatenate(preds), np.concatenate(gts))
    assert merged.matrix.tolist() == whole.matrix.tolist()
    assert whole.matrix.tolist() == naive_matrix(np.concatenate(preds), np.concatenate(gts), c).tolist()
    assert merged.miou() == whole.miou()


@settings(max_examples=60, deadline=None)
@given(num_classes=st.integers(1, 12), data=st.data())
def test_perfect_prediction_scores_one(num_classes, data):
    labels = st.one_of(st.integers(0, num_classes - 1), st.just(IGNORE))
    gt = data.draw(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
                              elements=labels))
    valid = gt != IGNORE
    if not valid.any():
        gt.flat[0] = 0
        valid = gt != IGNORE
    pred = np.where(valid, gt, 0)  # what is predicted at ignored pixels must not matter
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, gt)
    assert cm.miou() == 1.0
    assert cm.pixel_accuracy() == 1.0
    absent = ~np.isin(np.arange(num_classes), gt[valid])
    assert np.isnan(cm.iou_per_class()[absent]).all()


@pytest.mark.parametrize("pred, gt, match", [
    (np.zeros((2, 3), int), np.zeros((3, 2), int), "shape"),
    (np.zeros(0, int), np.zeros(0, int), "empty"),
    (np.zeros(3, float), np.zeros(3, int), "integer"),
    (np.zeros(3, int), np.array([0, 4, 1]), "gt labels outside"),
    (np.zeros(3, int), np.array([0, -1, 1]), "gt labels outside"),
    (np.array([0, 255, 1]), np.zeros(3, int), "pred labels outside"),
])
def test_bad_update_raises(pred, gt, match):
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match=match):
        cm.update(pred, gt)
    assert not cm.matrix.any()  # a rejected frame leaves the counts untouched


def test_bad_construction_merge_and_empty_scores():
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            ConfusionMatrix(bad)
    with pytest.raises(ValueError, match="is a class id"):
        ConfusionMatrix(4, ignore_label=3)
    with pytest.raises(ValueError, match="cannot merge"):
        ConfusionMatrix(4).merge(ConfusionMatrix(5))
    with pytest.raises(ValueError, match="cannot merge"):
        ConfusionMatrix(4).merge(ConfusionMatrix(4, ignore_label=-1))
    empty = ConfusionMatrix(4)
    for score in (empty.miou, empty.pixel_accuracy, empty.iou_per_class):
        with pytest.raises(ValueError, match="no labelled pixels"):
            score()


# ---------------------------------------------------------------- transfer ratio

def test_samples_transfer_ratio():
    assert samples_transfer_ratio(25, 100) == 0.25
    assert samples_transfer_ratio(0, 7) == 0.0
    assert samples_transfer_ratio(7, 7) == 1.0
    for uploaded, inferred, match in [(1, 0, "no samples inferred"), (0, 0, "no samples inferred"),
                                      (8, 7, "uploaded"), (-1, 7, "uploaded"),
                                      (1.0, 7, "uploaded"), (True, 7, "uploaded"),
                                      (1, 7.5, "inferred")]:
        with pytest.raises(ValueError, match=match):
            samples_transfer_ratio(uploaded, inferred)


# ---------------------------------------------------------------- BWT / FWT

# R[i][j]: score on task j after learning task i; B[j]: initial (round-0) model on task j.
B = [0.5, 0.2, 0.1]
R = [[0.8, 0.3, 0.2],
     [0.7, 0.9, 0.4],
     [0.6, 0.8, 0.9]]


def test_bwt_hand_computed():
    # Ianvs stacks M = [B; R] (4 x 3) and averages the 3 x 3 round-to-round differences:
    #   R[0]-B    = ( 0.3,  0.1, 0.1) -> 0.5
    #   R[1]-R[0] = (-0.1,  0.6, 0.2) -> 0.7
    #   R[2]-R[1] = (-0.1, -0.1, 0.5) -> 0.3
    #   BWT = (0.5 + 0.7 + 0.3) / 9 = 1.5 / 9; telescoped: sum(R[2] - B) = 0.1+0.6+0.8 = 1.5.
    # (GEM's BWT would be ((0.6-0.8) + (0.8-0.9) + 0) / 3 = -0.1: not what Ianvs computes.)
    assert bwt(R, B) == pytest.approx(1.5 / 9)


def test_fwt_hand_computed():
    # Ianvs: 1/T * sum_i (M[i][i] - M[0][i]) with M = [B; R]:
    #   i=0: B[0] - B[0]       = 0        (kept: the divisor is T = 3, not 2)
    #   i=1: R[0][1] - B[1]    = 0.3 - 0.2 = 0.1
    #   i=2: R[1][2] - B[2]    = 0.4 - 0.1 = 0.3
    #   FWT = (0 + 0.1 + 0.3) / 3
    assert fwt(R, B) == pytest.approx(0.4 / 3)


def test_single_task():
    # T = 1: BWT = (R[0][0] - B[0]) / 1, FWT = only the always-zero i=0 term.
    assert bwt([[0.7]], [0.4]) == pytest.approx(0.3)
    assert fwt([[0.7]], [0.4]) == 0.0


@settings(max_examples=40, deadline=None)
@given(data=st.data(), t=st.integers(1, 6))
def test_bwt_fwt_match_ianvs_loops(data, t):
    scores = st.floats(0, 1)
    r = data.draw(hnp.arrays(np.float64, (t, t), elements=scores))
    b = data.draw(hnp.arrays(np.float64, (t,), elements=scores))
    m = [list(b)] + [list(row) for row in r]  # Ianvs's rows: round 0, then one per task
    # The sums as Ianvs's compute() states them, over its (T+1) x T matrix.
    bwt_sum = sum(m[i + 1][j] - m[i][j] for i in range(t) for j in range(t))
    fwt_sum = sum(m[i][i] - m[0][i] for i in range(t))
    assert bwt(r, b) == pytest.approx(bwt_sum / t**2, abs=1e-12)
    assert fwt(r, b) == pytest.approx(fwt_sum / t, abs=1e-12)


@pytest.mark.parametrize("r, b, match", [
    ([[0.1, 0.2]], [0.1], "square"),
    ([], [], "square"),
    ([0.1, 0.2], [0.1, 0.2], "square"),
    (R, B[:2], "initial_scores"),
    ([[0.1, math.nan], [0.2, 0.3]], [0.1, 0.2], "finite"),
    ([[0.1, 0.2], [0.2, 0.3]], [math.inf, 0.2], "finite"),
])
def test_bwt_fwt_bad_input(r, b, match):
    for f in (bwt, fwt):
        with pytest.raises(ValueError, match=match):
            f(r, b)


# ---------------------------------------------------------------- latency

def test_latency_percentiles():
    assert latency_percentiles(range(1, 101)) == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    v = np.random.default_rng(1).gamma(2.0, 10.0, 997)
    got = latency_percentiles(v)
    assert list(got) == ["p50", "p95", "p99"]
    assert [got[k] for k in got] == pytest.approx(np.percentile(v, [50, 95, 99]).tolist())
    assert latency_percentiles([4.0]) == {"p50": 4.0, "p95": 4.0, "p99": 4.0}
    for bad, match in [([], "no latency"), ([1.0, math.nan], "finite"), ([1.0, -0.5], "non-negative")]:
        with pytest.raises(ValueError, match=match):
            latency_percentiles(bad)


# ---------------------------------------------------------------- report

CLASSES = ["road", "sidewalk", "curb", "<stair>"]


def report_inputs():
    rng = np.random.default_rng(2)
    overlay = np.zeros((24, 32, 3), np.uint8)
    overlay[:, :16] = (200, 30, 30)
    return dict(
        report={"edge_only": {"miou": 0.61, "pixel_accuracy": 0.9},
                "collaborative": {"miou": 0.72, "samples_transfer_ratio": 0.125},
                "bwt": math.nan, "fwt": np.float32(0.05), "tasks": 3},
        class_names=CLASSES,
        per_class_iou={"edge_only": [0.9, 0.5, math.nan, 0.0], "collaborative": [0.95, 0.6, 0.3, 0.1]},
        latency={"edge_only": rng.gamma(4, 5, 200), "collaborative": rng.gamma(4, 9, 200)},
        overlays=[("frame 12 <edge>", overlay), ("frame 40", overlay[::-1].copy())],
    )


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(s) for s in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_json_and_html(tmp_path):
    json_path, html_path = write_report(tmp_path / "out", **report_inputs())
    assert (json_path.name, html_path.name) == ("report.json", "report.html")

    text = json_path.read_text()
    assert "NaN" not in text
    data = json.loads(text)  # strict JSON
    assert data["bwt"] is None
    assert data["fwt"] == pytest.approx(0.05)
    assert data["edge_only"] == {"miou": 0.61, "pixel_accuracy": 0.9}

    page = html_path.read_text()
    assert "<td>edge_only.miou</td><td>0.61</td>" in page  # headline, nested keys dotted
    assert "<td>bwt</td><td>n/a</td>" in page
    for name in ("road", "sidewalk", "curb", "&lt;stair&gt;"):  # one IoU row per class, escaped
        assert f"<tr><td>{name}</td>" in page
    assert '<td class="na">n/a</td>' in page  # the absent class
    assert "background:hsl(" in page  # coloured cells
    assert "frame 12 &lt;edge&gt;" in page
    assert not re.search(r"https?://", page)  # self-contained: nothing fetched
    images = data_uris(page)
    assert len(images) == 4  # mIoU bars, latency CDF, two overlays
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"tEXtSoftware" not in png  # no matplotlib URL
    first = mpimg.imread(io.BytesIO(images[0]), format="png")
    assert first.shape[0] > 100 and first.shape[1] > 100
    assert mpimg.imread(io.BytesIO(images[2]), format="png").shape[:2] == (24, 32)


def test_report_per_class_iou_read_back_from_json(tmp_path):
    # report.json stores NaN as null; such lists must be accepted back as NaN.
    inputs = report_inputs()
    inputs["per_class_iou"] = json.loads(json.dumps({"t0": [0.5, None, 1.0, 0.0]}))
    inputs.update(latency={}, overlays=[])
    _, html_path = write_report(tmp_path, **inputs)
    assert len(data_uris(html_path.read_text())) == 1


@pytest.mark.parametrize("change, match", [
    ({"per_class_iou": {"a": [0.5, 0.5]}}, "per_class_iou"),
    ({"per_class_iou": {"a": [0.5, 0.5, 1.5, 0.0]}}, r"outside \[0, 1\]"),
    ({"latency": {"a": []}}, "latency"),
    ({"overlays": [("x", np.zeros((4, 4), np.uint8))]}, "overlay"),
    ({"overlays": [("x", np.zeros((4, 4, 3), np.float32))]}, "overlay"),
    ({"class_names": []}, "class_names"),
    ({"report": {"when": object()}}, "JSON"),
    ({"report": [0.5]}, "report must be a dict"),
])
def test_report_bad_input_writes_nothing(tmp_path, change, match):
    inputs = report_inputs() | change
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path / "out", **inputs)
    assert not (tmp_path / "out").exists()

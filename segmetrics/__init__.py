"""Metrics with the definitions KubeEdge-Ianvs uses, in pure numpy.

Sources read (github.com/kubeedge/ianvs):
  * IoU, mIoU, pixel accuracy: the `Evaluator` of the robot lifelong-learning example,
    examples/robot/lifelong_learning_bench/semantic-segmentation/testalgorithms/rfnet/
    RFNet/utils/metrics.py, called by .../semantic-segmentation/testenv/accuracy.py
    (whose returned "accuracy" is the mIoU).
  * samples transfer ratio, BWT, FWT: core/testcasecontroller/metrics/metrics.py
    (`samples_transfer_ratio_func`, `compute`), fed by the task matrix built in
    core/testcasecontroller/algorithm/paradigm/lifelong_learning/lifelong_learning.py.
Where this module departs from Ianvs it says so in the function's docstring.

A leaf package (numpy only): training (rfnet.training), the cloud's gate
(cloud_bridge.lifelong) and the evaluation (seg_eval) all import it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["ConfusionMatrix", "bwt", "fwt", "latency_percentiles", "samples_transfer_ratio"]


class ConfusionMatrix:
    """Pixel counts accumulated over frames: `matrix[g, p]` = pixels of class g predicted p.

    Ianvs (RFNet `Evaluator._generate_matrix`) counts only pixels whose ground truth is a
    class in [0, num_classes); the ignore label (255) never enters the matrix. Ianvs maps
    out-of-range ground truth to 255 silently; here it is an error, so that a wrong
    `num_classes` or an unmapped label id cannot quietly shrink the evaluated set.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(f"ignore_label {ignore_label} is a class id (num_classes={num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self._counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @property
    def matrix(self) -> npt.NDArray[np.int64]:
        """A copy of the counts (rows: ground truth, columns: prediction)."""
        return self._counts.copy()

    def update(self, pred: npt.ArrayLike, gt: npt.ArrayLike) -> None:
        """Add one frame (or a batch): integer label maps of the same shape."""
        pred_a, gt_a = np.asarray(pred), np.asarray(gt)
        if pred_a.shape != gt_a.shape:
            raise ValueError(f"pred shape {pred_a.shape} != gt shape {gt_a.shape}")
        if gt_a.size == 0:
            raise ValueError("empty label maps")
        for name, a in (("pred", pred_a), ("gt", gt_a)):
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        valid = gt_a != self.ignore_label
        g = gt_a[valid].astype(np.int64)
        # The prediction at an ignored pixel is never counted, so it is not checked either.
        p = pred_a[valid].astype(np.int64)
        if g.size == 0:
            return  # an all-ignore frame adds nothing, as in Ianvs
        for name, a in (("gt", g), ("pred", p)):
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"{name} labels outside [0, {self.num_classes}) other than ignore "
                    f"{self.ignore_label}: min {lo}, max {hi}")
        # One bincount over the flattened (gt, pred) pair index: a single O(pixels) pass.
        self._counts += np.bincount(g * self.num_classes + p, minlength=self.num_classes ** 2
                                    ).reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from another worker); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
            raise ValueError(
                f"cannot merge (num_classes, ignore_label) {(other.num_classes, other.ignore_label)} "
                f"into {(self.num_classes, self.ignore_label)}")
        self._counts += other._counts
        return self

    def _require_counts(self) -> None:
        if not self._counts.any():
            raise ValueError("no labelled pixels accumulated: nothing to score")

    def iou_per_class(self) -> npt.NDArray[np.float64]:
        """IoU_c = TP / (TP + FP + FN) = diag / (row sum + column sum - diag).

        NaN for a class absent from both ground truth and prediction (0/0), as in Ianvs's
        `Mean_Intersection_over_Union`; a class only predicted scores 0.
        """
        self._require_counts()
        tp = np.diag(self._counts).astype(np.float64)
        union = self._counts.sum(axis=0) + self._counts.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return tp / union

    def miou(self) -> float:
        """Mean IoU over the classes present in ground truth or prediction (Ianvs: np.nanmean)."""
        return float(np.nanmean(self.iou_per_class()))

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels (Ianvs `Pixel_Accuracy`: trace / total)."""
        self._require_counts()
        return float(np.trace(self._counts) / self._counts.sum())


def samples_transfer_ratio(uploaded: int, inferred: int) -> float:
    """Share of inferred samples sent to the cloud: uploaded / inferred.

    Ianvs (`samples_transfer_ratio_func`) sums, over rounds, the hard samples transferred
    and the samples inferred, and returns round(transferred / (inferred + 1), 4); the +1
    only guards against a zero denominator. Here the ratio is exact and unrounded, and
    inferred == 0 is an error; the two agree to within 1/(inferred+1).
    """
    for name, v in (("uploaded", uploaded), ("inferred", inferred)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if inferred == 0:
        raise ValueError("no samples inferred: transfer ratio undefined")
    if uploaded > inferred:
        raise ValueError(f"uploaded ({uploaded}) > inferred ({inferred})")
    return uploaded / inferred


def _ianvs_matrix(task_matrix: npt.ArrayLike, initial_scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Stack b on top of R: Ianvs's (T+1) x T matrix M, M[0] = b, M[i+1] = R[i]."""
    r = np.asarray(task_matrix, dtype=np.float64)
    b = np.asarray(initial_scores, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"task_matrix must be a non-empty square T x T matrix, got shape {r.shape}")
    if b.shape != (r.shape[0],):
        raise ValueError(f"initial_scores must have shape ({r.shape[0]},), got {b.shape}")
    m = np.vstack([b, r])
    if not np.isfinite(m).all():
        raise ValueError("task_matrix and initial_scores must be finite")
    return m


def bwt(task_matrix: npt.ArrayLike, initial_scores: npt.ArrayLike) -> float:
    """Backward transfer, exactly as Ianvs's `compute` (core/testcasecontroller/metrics/
    metrics.py) computes it.

    Index convention. R[i][j] (T x T) is the score on task j after learning task i; b[j]
    the score on task j of the initial model (Ianvs's round 0, trained before task 0).
    Ianvs's matrix "all" is M = [b; R]: (T+1) rows (one per training round, row 0 the
    initial model) by T columns (the test sets of rounds 1..T), so M[i+1][j] = R[i][j]
    and M[0][j] = b[j]. Ianvs averages the round-to-round change of every cell:

        BWT = 1/T^2 * sum_{i=0..T-1} sum_{j=0..T-1} (M[i+1][j] - M[i][j])
            = 1/T^2 * sum_j (R[T-1][j] - b[j])              (the sum telescopes)

    This is not GEM's BWT, mean_{j<T} (R[T-1][j] - R[j][j]), which an earlier Ianvs
    revision of the same function computed; that one needed no b. Ianvs's current score
    also counts gains on tasks not yet learned, and shrinks with 1/T.
    """
    m = _ianvs_matrix(task_matrix, initial_scores)
    return float(np.diff(m, axis=0).mean())


def fwt(task_matrix: npt.ArrayLike, initial_scores: npt.ArrayLike) -> float:
    """Forward transfer, as Ianvs's `compute` computes it (same source and convention as `bwt`).

        FWT = 1/T * sum_{i=0..T-1} (M[i][i] - M[0][i])
            = 1/T * sum_{j=1..T-1} (R[j-1][j] - b[j])

    i.e. how much better than the initial model each task is scored just before it is
    learned. Note the divisor is T, not T-1: Ianvs keeps the j = 0 term, which is always 0
    (M[0][0] - M[0][0]).
    """
    m = _ianvs_matrix(task_matrix, initial_scores)
    return float((np.diag(m[:-1]) - m[0]).mean())


def latency_percentiles(values_ms: Sequence[float] | npt.ArrayLike) -> dict[str, float]:
    """p50, p95, p99 of latencies in ms, by numpy's default linear interpolation.

    Ianvs defines no latency percentiles; this matches the ones the edge node and the
    benches in this repository report (np.percentile).
    """
    v = np.asarray(values_ms, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no latency values")
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError("latencies must be finite and non-negative")
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}

"""Evaluation for the segmentation runs, scored as KubeEdge-Ianvs scores them.

`seg_eval.metrics` holds the numbers (confusion-matrix IoU, transfer ratio, BWT/FWT,
latency percentiles) and is re-exported here; `seg_eval.report.write_report` turns them
into report.json and a self-contained report.html. The report is not imported here so
that using the metrics does not load matplotlib.
"""
from __future__ import annotations

from seg_eval.metrics import (
    ConfusionMatrix,
    bwt,
    fwt,
    latency_percentiles,
    samples_transfer_ratio,
)

__all__ = ["ConfusionMatrix", "bwt", "fwt", "latency_percentiles", "samples_transfer_ratio"]

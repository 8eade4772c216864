"""Evaluation of segmentation runs, scored as KubeEdge-Ianvs scores them.

The numbers (confusion-matrix IoU, transfer ratio, BWT/FWT, latency percentiles) are
in the leaf package `segmetrics`; `seg_eval.report.write_report` turns them into
report.json and a self-contained report.html; `seg_eval.replay_eval` replays bags
through the real node and loop; `seg_eval.main_job` is the README's main job.
"""

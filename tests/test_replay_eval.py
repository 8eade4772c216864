"""A small evaluation end to end: dataset -> bag -> replay through node (+ bridge) -> metrics.

The runner's figures must equal what is computed directly from the same predictions:
the engine run offline for the edge, the bridge's stored refined labels for the cloud.
"""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from cloud_bridge.sample_store import SqliteSampleStore
from rfnet.engines import EngineConfig, ModelSpec, load_engine
from rfnet.preprocessing import PreprocessConfig
from seg_edge_node.pipeline import SegmentationPipeline
from seg_harness.synthetic_camera import synthetic_frame
from segmetrics import ConfusionMatrix
from seg_eval.replay_eval import ReplayConfig, run_replay

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
H, W, N = 120, 160, 6
NET_H, NET_W = 64, 96


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for sub in ("rgb", "depth", "label"):
        (root / sub).mkdir()
    frames, lines = [], []
    for i in range(N):
        rgb, depth = synthetic_frame(i, H, W)
        depth_mm = np.round(depth * 1000).astype(np.uint16)
        truth = np.where(depth_mm > 0, 0, 10).astype(np.uint8)   # road where there is ground, sky above
        cv2.imwrite(str(root / "rgb" / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_mm)
        cv2.imwrite(str(root / "label" / f"{i}.png"), truth)
        lines.append(f"rgb/{i}.png depth/{i}.png label/{i}.png")
        frames.append((rgb, depth_mm.astype(np.float32) / 1000.0, truth))
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    bag = root / "run.mcap"
    subprocess.run([sys.executable, "-m", "seg_edge_node.bag_from_dataset", "--index", str(root / "test.txt"),
                    "--out", str(bag), "--rate", "5"], check=True, capture_output=True)
    return bag, frames


def test_edge_mode_scores_what_the_engine_computes(dataset, reference_checkpoint, tmp_path):
    bag, frames = dataset
    result = run_replay(ReplayConfig(bag, reference_checkpoint, tmp_path, "edge", input_height=NET_H,
                                     input_width=NET_W))
    assert result.frames_in_bag == N and result.frames_segmented == N
    engine = load_engine(EngineConfig(str(reference_checkpoint), ModelSpec(30, NET_H, NET_W), "onnxruntime",
                                      str(tmp_path / "cache"))).engine
    pipeline = SegmentationPipeline(engine, PreprocessConfig(NET_H, NET_W))
    expected = ConfusionMatrix(30)
    for rgb, depth, truth in frames:
        expected.update(pipeline.run(rgb, depth).labels, truth)
    np.testing.assert_array_equal(result.edge.matrix, expected.matrix)
    summary = result.summary()
    assert summary["miou_edge"] == pytest.approx(expected.miou())
    assert summary["transfer_ratio"] == 0.0 and summary["bytes_sent"] == 0
    assert 0 < summary["latency_ms_p50"] <= summary["latency_ms_p99"] < 5000


def test_edge_cloud_mode_scores_the_refined_masks(dataset, reference_checkpoint, tmp_path):
    bag, frames = dataset
    result = run_replay(ReplayConfig(bag, reference_checkpoint, tmp_path, "edge_cloud", input_height=NET_H,
                                     input_width=NET_W, node_params={
                                         "mining.policy": "random", "mining.random_rate": 1.0,
                                         "mining.budget_per_minute": 6000.0, "mining.budget_burst": 100}))
    assert result.frames_segmented == N and result.uploaded == N and result.refined == N
    expected = ConfusionMatrix(30)
    with SqliteSampleStore(tmp_path / "store" / "samples") as store:
        samples = [store.get(info.frame_uuid) for info in store.list(limit=100)]
    assert len(samples) == N
    # Frames replay in order, so sort the stored samples by stamp to pair them with the truth.
    for sample, (_, _, truth) in zip(sorted(samples, key=lambda s: s.stamp_ns), frames):
        expected.update(sample.labels, truth)
    np.testing.assert_array_equal(result.final.matrix, expected.matrix)
    summary = result.summary()
    assert summary["transfer_ratio"] == 1.0 and summary["bytes_sent"] > 0

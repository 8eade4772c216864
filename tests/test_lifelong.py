"""Lifelong retraining end to end on CPU, at 64x96 with a 3-class RFNet.

Old task: road (class 0, grey, 3 m) below a horizon, sky (class 1, blue, no depth) above.
New task, a domain shift the current model fails on: inverted colours and a new class,
an obstacle (class 2, 1 m). The "current" model is trained briefly on the old task
here; the new task's frames sit in a real SqliteSampleStore as ground-truth and SAM
labelled samples, the old task's as PNG + Ianvs index (rehearsal and held-out data).

    .venv/bin/python -m pytest tests/test_lifelong.py -q
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloud_bridge.lifelong import LifelongError, LifelongTrainer
from cloud_bridge.lifelong_config import FineTuneConfig, GateConfig, LifelongConfig, RehearsalConfig
from cloud_bridge.sample_store import Sample, SqliteSampleStore
from rfnet.checkpoint import load_checkpoint, save_checkpoint
from rfnet.network import RFNet, RFNetConfig
from rfnet.training import TrainConfig, Trainer, open_labelled
from rfnet.training_data import TorchSegmentationDataset
from segmetrics import bwt, fwt

REPO_ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 96
ROAD, SKY, OBSTACLE = 0, 1, 2
NEW_FRAMES = 12          # with holdout_every=5, frames 7, 8 and 11 are held out


def scene(rng: np.random.Generator, new_task: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    horizon = int(rng.integers(H // 4, H // 2))
    labels = np.full((H, W), ROAD, np.uint8)
    labels[:horizon] = SKY
    depth = np.where(labels == SKY, 0.0, 3.0).astype(np.float32)
    rgb = np.where(labels[..., None] == SKY, [70, 130, 180], [90, 90, 95]).astype(np.float32)
    if new_task:
        y, x = int(rng.integers(horizon + 2, H - 16)), int(rng.integers(0, W - 30))
        labels[y:y + 14, x:x + 28] = OBSTACLE
        depth[y:y + 14, x:x + 28] = 1.0
        rgb[y:y + 14, x:x + 28] = [200, 40, 40]
        rgb = 255 - rgb
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth, labels


def write_index(root: Path, name: str, n: int, seed: int, new_task: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        rgb, depth, labels = scene(rng, new_task)
        stem = f"{name}_{i}"
        cv2.imwrite(str(root / f"{stem}_rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"{stem}_depth.png"), np.rint(depth * 1000).astype(np.uint16))
        cv2.imwrite(str(root / f"{stem}_label.png"), labels)
        lines.append(f"{stem}_rgb.png {stem}_depth.png {stem}_label.png")
    (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root / f"{name}.txt"


def new_task_sample(i: int, rng: np.random.Generator, source: str) -> Sample:
    rgb, depth, labels = scene(rng, new_task=True)
    return Sample(frame_uuid=f"newtask-{i:03d}", robot_id="dog-1", stamp_ns=i, frame_id="cam",
                  edge_model_version="v1", mining_policy="entropy", mining_score=1.0, label_source=source,
                  refiner="test", received_at=1_760_000_000.0 + i, rgb=rgb, depth_m=depth,
                  edge_labels=np.zeros((H, W), np.uint8), labels=labels, tags={"task": "inverted"})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a shared 2-core machine two torch threads mostly wait for each other (a 1-step
    epoch measured 16 s with 2 threads, 0.75 s with 1); the figures stay seeded either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Old-task index files, a store of new-task frames, and the current model."""
    root = tmp_path_factory.mktemp("lifelong")
    data = root / "data"
    data.mkdir()
    old_train, old_val = write_index(data, "old_train", 8, seed=1), write_index(data, "old_val", 4, seed=2)
    rng = np.random.default_rng(3)
    with SqliteSampleStore(root / "samples") as store:
        for i in range(NEW_FRAMES):
            store.put(new_task_sample(i, rng, "ground_truth" if i % 3 else "sam"))
        store.put(new_task_sample(NEW_FRAMES, rng, "region"))   # not a training label: never counted
    cfg = TrainConfig(epochs=4, batch_size=4, lr=3e-3, input_height=H, input_width=W, augment=False)
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=3))
    Trainer(model, cfg).fit(TorchSegmentationDataset(open_labelled(old_train, 3), cfg.preprocess), progress=False)
    current = save_checkpoint(model, root / "current.pth")
    return {"root": root, "old_train": old_train, "old_val": old_val, "store": root / "samples", "current": current}


def config(world, out: str, **gate) -> LifelongConfig:
    return LifelongConfig(
        output_dir=str(world["root"] / out), min_new_samples=NEW_FRAMES, old_task_index=str(world["old_val"]),
        rehearsal=RehearsalConfig(index=str(world["old_train"]), ratio=1.0),
        train=FineTuneConfig(epochs=3, batch_size=4, lr=1e-3, input_height=H, input_width=W, freeze_bn=True,
                             augment=False, seed=0),
        gate=GateConfig(**{"min_new_gain": 0.1, "max_old_drop": 0.1, **gate}))


@pytest.fixture(scope="module")
def published(world):
    """The first run: the candidate learns the new task with rehearsal, and is published."""
    calls = []
    with SqliteSampleStore(world["store"]) as store:
        trainer = LifelongTrainer(config(world, "out_publish"), store, world["current"],
                                  on_publish=lambda path, decision: calls.append((path, decision)))
        before = (len(trainer.pending()), trainer.should_train())
        decision = trainer.run("test: triggered")
        after = (len(trainer.pending()), trainer.should_train())
    return {"decision": decision, "calls": calls, "before": before, "after": after, "trainer": trainer}


def test_trigger_counts_only_new_labelled_frames(world, published):
    assert published["before"] == (NEW_FRAMES, True)     # the region-labelled frame is not counted
    assert published["after"] == (0, False)              # the run advanced the marker
    with SqliteSampleStore(world["store"]) as store:
        stricter = dataclasses.replace(config(world, "out_trigger"), min_new_samples=NEW_FRAMES + 1)
        assert not LifelongTrainer(stricter, store, world["current"]).should_train()


def test_run_publishes_a_candidate_that_learned_the_new_task(world, published):
    d = published["decision"]
    assert d.published and d.reasons == () and d.candidate_id == 1
    assert d.new_task.delta >= 0.1 and -d.old_task.delta <= 0.1, (d.old_task, d.new_task)
    assert d.old_task.current > 0.8 and d.new_task.current < 0.5   # the shift broke the current model
    assert published["calls"] == [(d.candidate_path, d)]
    assert published["trainer"].current_checkpoint == d.candidate_path  # the next run builds on it

    record = json.loads(d.record_path.read_text())
    assert d.record_path.name == "candidate-000001.json" and record == d.record
    assert record["published"] is True and record["decision"] == "publish" and record["blocked_because"] == []
    assert record["reason"] == "test: triggered"
    fig = record["figures"]
    matrix = [[d.old_task.current, d.new_task.current], [d.old_task.candidate, d.new_task.candidate]]
    assert fig["task_matrix"] == matrix and fig["initial_scores"] == matrix[0]
    assert fig["bwt"] == pytest.approx(bwt(matrix, matrix[0])) == pytest.approx(
        (d.old_task.delta + d.new_task.delta) / 4)
    assert fig["fwt"] == fwt(matrix, matrix[0]) == 0.0
    assert fig["new_task"] == {"current": d.new_task.current, "candidate": d.new_task.candidate,
                               "delta": d.new_task.delta}
    assert record["thresholds"] == {"min_new_gain": 0.1, "max_old_drop": 0.1}
    assert record["label_sources"] == ["human", "ground_truth", "sam"]
    samples = record["samples"]
    assert (samples["new"], samples["new_training"], samples["new_held_out"]) == (12, 9, 3)
    assert samples["new_by_source"] == {"sam": 4, "ground_truth": 8} and samples["new_by_task"] == {"inverted": 12}
    assert samples["rehearsal"]["drawn"] == 8 and samples["rehearsal"]["pool_index"] == 8
    assert samples["training"] == 17 and samples["old_task_eval"] == 4 and samples["new_task_eval"] == 3
    assert samples["new_task_eval_source"] == "buffer held-out split (3 frames)"
    assert [h["epoch"] for h in record["train"]["history"]] == [1, 2, 3]
    assert set(record["timings_s"]) == {"data", "train", "eval", "total"}

    ckpt = torch.load(d.candidate_path, weights_only=False)
    assert set(ckpt) == {"epoch", "state_dict", "optimizer", "best_pred"}      # the Ianvs layout
    assert load_checkpoint(d.candidate_path).version == record["candidate"]["version"]
    marker = json.loads((d.record_path.parents[1] / "marker.json").read_text())
    assert marker["candidate_id"] == 1 and len(marker["seen"]) == NEW_FRAMES


@pytest.fixture(scope="module")
def tiny(world, tmp_path_factory):
    """A store of 5 new-task frames (4 training, 1 held out); with 4 rehearsal frames, two
    steps of training: enough for the gate's bookkeeping, the CLI and determinism."""
    root = tmp_path_factory.mktemp("tiny")
    with SqliteSampleStore(root / "samples") as store:
        for i in (0, 1, 2, 3, 7):
            store.put(new_task_sample(i, np.random.default_rng(i), "sam"))
    return root


def tiny_config(world, out: Path, **gate) -> LifelongConfig:
    return LifelongConfig(output_dir=str(out), min_new_samples=5, old_task_index=str(world["old_val"]),
                          rehearsal=RehearsalConfig(index=str(world["old_train"]), ratio=1.0),
                          train=FineTuneConfig(epochs=1, batch_size=4, input_height=H, input_width=W, augment=False),
                          gate=GateConfig(**gate))


@pytest.fixture(scope="module")
def blocked(world, tiny):
    """A gate that demands an old-task gain (max_old_drop < 0) must block."""
    out = tiny / "out_block"
    (out / "candidates").mkdir(parents=True)
    (out / "candidates" / "candidate-000007.pth").write_bytes(b"")  # a run that died before its record
    calls = []
    with SqliteSampleStore(tiny / "samples") as store:
        trainer = LifelongTrainer(tiny_config(world, out, max_old_drop=-0.5), store, world["current"],
                                  on_publish=lambda *a: calls.append(a))
        decision = trainer.run("test: strict gate")
        pending = trainer.pending()
    return {"decision": decision, "calls": calls, "trainer": trainer, "pending": pending}


def test_a_strict_gate_blocks_and_the_record_says_why(world, blocked):
    d = blocked["decision"]
    assert not d.published and blocked["calls"] == [] and d.candidate_id == 8
    assert blocked["pending"] == []                       # it ran, so the marker advanced
    assert blocked["trainer"].current_checkpoint == world["current"]
    record = json.loads(d.record_path.read_text())
    assert record["published"] is False and record["decision"] == "block"
    assert record["thresholds"] == {"min_new_gain": 0.02, "max_old_drop": -0.5}
    assert len(record["blocked_because"]) >= 1 and any(
        r.startswith("old-task mIoU drop") and r.endswith("> max_old_drop -0.5000") for r in record["blocked_because"])
    assert record["blocked_because"] == list(d.reasons)
    assert (record["samples"]["new_training"], record["samples"]["rehearsal"]["drawn"]) == (4, 4)
    assert d.candidate_path.is_file()                     # kept for inspection


def test_a_new_task_index_replaces_the_buffer_split(world, tiny):
    index = write_index(tiny, "new_val", 2, seed=5, new_task=True)
    cfg = dataclasses.replace(tiny_config(world, tiny / "out_index"), new_task_index=str(index))
    with SqliteSampleStore(tiny / "samples") as store:
        d = LifelongTrainer(cfg, store, world["current"]).run("test: new-task index")
    assert d.record["samples"]["new_task_eval_source"] == str(index) and d.record["samples"]["new_task_eval"] == 2


def test_runs_that_cannot_be_judged_are_refused(world, published, tmp_path):
    with SqliteSampleStore(world["store"]) as store:
        no_old = dataclasses.replace(config(world, "out_refuse"), old_task_index="")
        with pytest.raises(LifelongError, match="old_task_index is empty"):
            LifelongTrainer(no_old, store, world["current"]).run("test")
        # The published run's marker has seen every frame: nothing new to train on.
        with pytest.raises(LifelongError, match="no new labelled training frames"):
            LifelongTrainer(config(world, "out_publish"), store, world["current"]).run("test")
    with SqliteSampleStore(tmp_path / "one") as store:
        store.put(new_task_sample(0, np.random.default_rng(0), "sam"))  # in the training split
        with pytest.raises(LifelongError, match="no new-task held-out data"):
            LifelongTrainer(config(world, "out_refuse"), store, world["current"]).run("test")


def test_unknown_class_weights_are_refused():
    from seg_core import ConfigError

    with pytest.raises(ConfigError, match="train.class_weights='median': use none or enet"):
        FineTuneConfig(class_weights="median")


def test_cli_forced_run_repeats_the_figures_and_prints_the_decision(world, tiny, blocked, capsys):
    """Not triggered, a bad checkpoint, then a forced run in another process: the same
    inputs as the blocked run give the same figures (runs are seeded), and its lenient
    gate publishes."""
    from cloud_bridge.lifelong import main

    out = tiny / "out_cli"
    yaml = tiny / "bridge.yaml"
    yaml.write_text(f"storage_dir: {tiny}\nlifelong:\n  output_dir: {out}\n"
                    f"  min_new_samples: 6\n  old_task_index: {world['old_val']}\n"
                    f"  rehearsal: {{index: {world['old_train']}, ratio: 1.0}}\n"
                    "  train: {epochs: 1, batch_size: 4, input_height: 64, input_width: 96, augment: false}\n"
                    "  gate: {min_new_gain: -1.0, max_old_drop: 1.0}\n")
    args = ["--config", str(yaml), "--current", str(world["current"])]
    assert main(args) == 0
    assert "not triggered: 5 new labelled frames < min_new_samples 6" in capsys.readouterr().out
    assert main(args[:-1] + [str(tiny / "none.pth"), "--force"]) == 2
    assert "none.pth" in capsys.readouterr().err
    assert not (out / "marker.json").exists()
    # In another process (as an operator runs it), with the test's one torch thread:
    run = subprocess.run([sys.executable, "-m", "cloud_bridge.lifelong", *args, "--force", "--threads", "1"],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    assert "candidate 1: PUBLISH" in run.stdout and "new-task mIoU" in run.stdout and "BWT" in run.stdout
    record = json.loads((out / "decisions" / "candidate-000001.json").read_text())
    assert record["reason"] == "forced (5 new labelled frames)" and record["published"] is True
    assert record["figures"] == blocked["decision"].record["figures"]
    assert (out / "marker.json").exists()

"""The replay buffer over a real SqliteSampleStore: eviction order and counters, label
source preference, the held-out split, the trigger's new-frame count, the dataset
adapter, the CLI (list, show, import-labels, stats). (The lifelong config section's errors: test_bridge_config.py.)

    .venv/bin/python -m pytest tests/unit/test_replay_buffer.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_bridge.lifelong_config import LabelSourcesConfig, ReplayBufferConfig
from cloud_bridge.replay_buffer import ReplayBuffer, is_held_out, main
from cloud_bridge.sample_store import Sample, SqliteSampleStore
from rfnet.preprocessing import PreprocessConfig
from rfnet.training_data import TorchSegmentationDataset

REPO_ROOT = Path(__file__).resolve().parents[2]
H, W = 16, 24


def make_sample(i: int, source: str = "sam", task: str | None = "campus", depth: bool = True) -> Sample:
    rng = np.random.default_rng(i)
    labels = np.zeros((H, W), np.uint8)
    labels[: H // 2] = 1
    return Sample(
        frame_uuid=f"frame-{i:04d}", robot_id=f"dog-{i % 2}", stamp_ns=1_000 + i, frame_id="cam",
        edge_model_version="v1", mining_policy="entropy", mining_score=0.5, label_source=source,
        refiner="test", received_at=1_760_000_000.0 + i,
        rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        depth_m=np.full((H, W), 2.0, np.float32) if depth else None,
        edge_labels=np.zeros((H, W), np.uint8), labels=labels,
        tags={} if task is None else {"task": task})


@pytest.fixture
def store(tmp_path):
    with SqliteSampleStore(tmp_path / "samples") as s:
        yield s


def test_eviction_takes_least_trusted_labels_first_oldest_first(store):
    buffer = ReplayBuffer(store, ReplayBufferConfig(max_samples=4))
    sources = ["human", "sam", "region", "ground_truth", "sam", "human"]  # frame-0000 .. frame-0005
    for i, source in enumerate(sources):
        buffer.add(make_sample(i, source))
    # 6 frames, cap 4: the region frame, then the oldest sam frame go; the oldest frame
    # of all (human) stays.
    assert [e.uuid for e in buffer.entries()] == ["frame-0000", "frame-0003", "frame-0004", "frame-0005"]
    assert buffer.evictions == {"region": 1, "sam": 1}
    for i in range(6, 9):
        buffer.add(make_sample(i, "human"))
    # Only human and ground-truth frames left to choose from: ground truth, then the oldest humans.
    assert [e.uuid for e in buffer.entries()] == ["frame-0005", "frame-0006", "frame-0007", "frame-0008"]
    assert buffer.evictions == {"region": 1, "sam": 2, "ground_truth": 1, "human": 1}
    assert buffer.stats()["evicted_by_this_process"] == dict(buffer.evictions)
    assert not buffer.add(make_sample(8, "sam"))  # the store dedups by uuid: nothing changes
    assert store.count() == 4


def test_a_full_buffer_evicts_in_batches_below_the_cap(store):
    buffer = ReplayBuffer(store, ReplayBufferConfig(max_samples=40))
    for i in range(40):
        buffer.add(make_sample(i))
    assert store.count() == 40 and not buffer.evictions
    buffer.add(make_sample(40))
    # 5 % below the cap at once: the next inserts find room without listing the buffer.
    assert store.count() == 38 and buffer.evictions == {"sam": 3}
    assert [e.uuid for e in buffer.entries()][0] == "frame-0003"   # the oldest went
    buffer.add(make_sample(41))
    buffer.add(make_sample(42))
    assert store.count() == 40 and buffer.evictions == {"sam": 3}


def test_labels_are_never_replaced_by_less_trusted_ones(store):
    buffer = ReplayBuffer(store)
    buffer.add(make_sample(0, "human"))
    buffer.add(make_sample(1, "sam"))
    ones = np.ones((H, W), np.uint8)
    assert not buffer.relabel("frame-0000", ones, "sam")            # a SAM pass after a human's correction
    assert store.get("frame-0000").label_source == "human"
    assert not np.array_equal(store.get("frame-0000").labels, ones)
    assert buffer.relabel("frame-0001", ones, "ground_truth")
    assert buffer.relabel("frame-0001", ones * 2, "human")
    assert store.get("frame-0001").label_source == "human" and (store.get("frame-0001").labels == 2).all()
    assert not buffer.relabel("frame-9999", ones, "human")          # unknown uuid


def test_only_enabled_label_sources_are_training_labels(store):
    for i, source in enumerate(["human", "ground_truth", "sam", "region"]):
        store.put(make_sample(i, source))
    default = ReplayBuffer(store)
    assert default.training_sources == ("human", "ground_truth", "sam")   # region off by default
    assert [e.label_source for e in default.entries(trainable=True)] == ["human", "ground_truth", "sam"]
    no_pseudo = ReplayBuffer(store, ReplayBufferConfig(label_sources=LabelSourcesConfig(sam=False)))
    assert [e.label_source for e in no_pseudo.new_since(None)] == ["human", "ground_truth"]
    with pytest.raises(ValueError, match="at least one"):
        LabelSourcesConfig(human=False, ground_truth=False, sam=False, region=False)


def test_held_out_split_is_deterministic_and_disjoint(tmp_path):
    uuids = [f"{i:08x}-4c1b-9e7d-{i:012x}" for i in range(500)]
    held = [u for u in uuids if is_held_out(u, 5)]
    assert 60 <= len(held) <= 140                     # about 1 in 5
    assert held == [u for u in uuids if is_held_out(u, 5)]
    assert not any(is_held_out(u, 0) for u in uuids)  # 0: nothing held out
    with SqliteSampleStore(tmp_path / "s") as store:
        for i in range(30):
            store.put(make_sample(i))
        a, b = ReplayBuffer(store), ReplayBuffer(store)
        out_a = {e.uuid for e in a.entries(held_out=True)}
        train_a = {e.uuid for e in a.entries(held_out=False)}
        assert out_a and train_a and not out_a & train_a and len(out_a | train_a) == 30
        assert out_a == {e.uuid for e in b.entries(held_out=True)}
    # A reopened store (another process, a restart) splits the same way.
    with SqliteSampleStore(tmp_path / "s") as store:
        assert {e.uuid for e in ReplayBuffer(store).entries(held_out=True)} == out_a


def test_new_since_counts_only_frames_not_yet_trained_on(store):
    buffer = ReplayBuffer(store)
    for i in range(5):
        store.put(make_sample(i, "sam"))
    store.put(make_sample(5, "region"))               # not a training label: never counts
    assert len(buffer.new_since(None)) == 5
    marker = buffer.marker(buffer.entries(trainable=True))
    assert buffer.new_since(marker) == []
    for i in range(6, 9):
        store.put(make_sample(i, "ground_truth"))
    assert [e.uuid for e in buffer.new_since(marker)] == ["frame-0006", "frame-0007", "frame-0008"]
    buffer.relabel("frame-0002", np.ones((H, W), np.uint8), "human")  # new information: counts again
    assert [e.uuid for e in buffer.new_since(marker)] == ["frame-0002", "frame-0006", "frame-0007", "frame-0008"]
    restored = type(marker).from_json(json.loads(json.dumps(marker.to_json())))
    assert restored == marker


def test_entries_carry_task_tags_and_filter(store):
    store.put(make_sample(0, task="campus"))
    store.put(make_sample(1, task="night"))
    store.put(make_sample(2, task=None))
    buffer = ReplayBuffer(store)
    assert [e.task for e in buffer.entries()] == ["campus", "night", "-"]
    assert [e.uuid for e in buffer.entries(task="night")] == ["frame-0001"]
    assert buffer.stats()["by_task"] == {"campus": 1, "night": 1, "-": 1}


def test_dataset_adapter_feeds_the_torch_wrapper(store):
    sample = make_sample(0)
    sample.labels[0, 0] = 200                         # beyond num_classes: ignore
    store.put(sample)
    store.put(make_sample(1, depth=False))
    buffer = ReplayBuffer(store)
    ds = buffer.dataset(buffer.entries(), num_classes=30)
    first = ds[0]
    assert first.name == "frame-0000" and first.labels[0, 0] == 255 and first.depth_m.dtype == np.float32
    assert ds[1].depth_m is None
    torch_ds = TorchSegmentationDataset(ds, PreprocessConfig(8, 12), require_depth=False)
    assert len(torch_ds) == 2 and tuple(torch_ds[0].rgb.shape) == (3, 8, 12) and not torch_ds[1].has_depth


# -- CLI --------------------------------------------------------------------------------
@pytest.fixture
def filled(tmp_path):
    directory = tmp_path / "samples"
    with SqliteSampleStore(directory) as store:
        for i, source in enumerate(["sam", "sam", "ground_truth", "region"]):
            store.put(make_sample(i, source))
    return directory


def test_cli_list_and_stats(filled, capsys):
    assert main(["--store", str(filled), "list", "--source", "sam"]) == 0
    out = capsys.readouterr().out
    assert "frame-0000" in out and "frame-0001" in out and "frame-0002" not in out and "2 frames" in out
    assert main(["--store", str(filled), "list", "--robot", "dog-1", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "frame-0003" in out and "frame-0001" not in out and "last 1 shown" in out
    # As a module, and reading the config's buffer settings.
    run = subprocess.run([sys.executable, "-m", "cloud_bridge.replay_buffer", "--store", str(filled),
                          "--config", str(REPO_ROOT / "cloud_bridge" / "bridge.yaml"), "stats"],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)
    assert stats["samples"] == 4 and stats["by_source"] == {"sam": 2, "ground_truth": 1, "region": 1}
    assert stats["labelled_train_split"] + stats["labelled_held_out_split"] == 3
    assert stats["training_sources"] == ["human", "ground_truth", "sam"]


def test_cli_show_writes_rgb_and_labels_side_by_side(filled, tmp_path, capsys):
    out = tmp_path / "show.png"
    assert main(["--store", str(filled), "show", "frame-0002", "--out", str(out)]) == 0
    meta = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert meta["label_source"] == "ground_truth" and meta["task"] == "campus" and meta["classes"] == [0, 1]
    image = cv2.imread(str(out))
    assert image.shape == (H, 2 * W, 3)
    with SqliteSampleStore(filled) as store:
        assert np.array_equal(image[:, :W, ::-1], store.get("frame-0002").rgb)
    assert main(["--store", str(filled), "show", "frame-9999"]) == 1
    assert "unknown frame uuid frame-9999" in capsys.readouterr().err


def test_cli_import_labels(filled, tmp_path, capsys):
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    good = np.full((H, W), 3, np.uint8)
    cv2.imwrite(str(labels_dir / "frame-0001.png"), good)
    cv2.imwrite(str(labels_dir / "frame-0003.png"), good)               # region -> human
    cv2.imwrite(str(labels_dir / "frame-7777.png"), good)               # unknown uuid
    cv2.imwrite(str(labels_dir / "frame-0000.png"), np.zeros((H + 1, W), np.uint8))   # wrong size
    cv2.imwrite(str(labels_dir / "frame-0002.png"), np.zeros((H, W, 3), np.uint8))    # colour, not class ids
    assert main(["--store", str(filled), "import-labels", str(labels_dir)]) == 1
    captured = capsys.readouterr()
    assert "imported 2 human label maps, 3 rejected" in captured.out
    assert "frame-7777.png: unknown frame uuid frame-7777" in captured.err
    assert f"frame-0000.png: labels are {W}x{H + 1} (WxH) but frame frame-0000 is {W}x{H}" in captured.err
    assert "frame-0002.png: must be a single-channel 8-bit image of class ids" in captured.err
    with SqliteSampleStore(filled) as store:
        for uuid in ("frame-0001", "frame-0003"):
            assert store.get(uuid).label_source == "human" and np.array_equal(store.get(uuid).labels, good)
        assert store.get("frame-0000").label_source == "sam"
        assert store.get("frame-0002").label_source == "ground_truth"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--store", str(filled), "import-labels", str(empty)]) == 2
    assert "no <uuid>.png label files" in capsys.readouterr().err


def test_cli_explains_a_missing_store(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "nope"), "stats"]) == 2
    assert "no sample store at" in capsys.readouterr().err

"""The main job's data: campus_sim datasets and the bags replayed through the robot.

For the old task (the base model's): train, val (the gate's held-out frames) and a
test bag. For the new task (the shifted domain): val, a test bag, and a `walk` bag,
the robot's walk through the new domain whose hard frames go to the cloud. The split
names give different streets (campus_sim.writer.split_seed), so no frame is in two sets.

Results are cached under <cache>/data-<key>/ (key: a hash of DataConfig); a folder is
used only when its `complete` marker exists, so an interrupted run starts it again.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from campus_sim.writer import generate

from .job_config import JobConfig


@dataclass(frozen=True)
class JobData:
    root: Path
    old_train: Path      # Ianvs index files
    old_val: Path
    new_val: Path
    old_test_index: Path
    new_test_index: Path
    walk_index: Path
    old_test_bag: Path
    new_test_bag: Path
    walk_bag: Path


def _layout(root: Path, cfg: JobConfig) -> JobData:
    old, new = root / cfg.data.old_task, root / cfg.data.new_task
    return JobData(root, old / "train.txt", old / "val.txt", new / "val.txt", old / "test.txt", new / "test.txt",
                   new / "walk.txt", root / "bags" / "old_test.mcap", root / "bags" / "new_test.mcap",
                   root / "bags" / "walk.mcap")


def prepare_data(cfg: JobConfig, cache: Path, say=print) -> JobData:
    d = cfg.data
    root = Path(cache) / f"data-{cfg.key('data')}"
    data = _layout(root, cfg)
    if (root / "complete").exists():
        say(f"data: reusing {root}")
        return data
    shutil.rmtree(root, ignore_errors=True)
    say(f"data: rendering {d.old_train + d.old_val + d.test} {d.old_task} and {d.walk + d.new_val + d.test} "
        f"{d.new_task} frames at {d.width}x{d.height} into {root}")
    for task, split, count in ((d.old_task, "train", d.old_train), (d.old_task, "val", d.old_val),
                               (d.old_task, "test", d.test), (d.new_task, "walk", d.walk),
                               (d.new_task, "val", d.new_val), (d.new_task, "test", d.test)):
        stride = d.train_stride if split == "train" else d.eval_stride
        # Ground-truth instances of the shifted task's test frames and walk: the benchmark's
        # SAM stand-in (seg_eval.sam_standin) builds its masks from them.
        generate(root, task, count, d.seed, d.height, d.width, split, d.workers, stride=stride,
                 instances=task == d.new_task and split in ("test", "walk"))
    (root / "bags").mkdir()
    for index, bag in ((data.old_test_index, data.old_test_bag), (data.new_test_index, data.new_test_bag),
                       (data.walk_index, data.walk_bag)):
        done = subprocess.run([sys.executable, "-m", "seg_edge_node.bag_from_dataset", "--index", index,
                               "--out", bag, "--rate", str(d.bag_rate), "--camera-yaml", index.parent / "camera.yaml"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"writing the bag {bag} failed:\n{done.stderr}")
    (root / "complete").touch()
    return data

#!/usr/bin/env python3
"""Lifelong-update recipe on a development split of the main job's new task: how well one
update learns from `--frames` labelled hard frames, for a rehearsal pool, ratio, epoch
count and class weighting. This is how seg_eval.job_config.UpdateConfig was chosen, on
frames that are never the job's val, test or walk.

- training: the ground truth of the `--frames` least confident frames (the base model's
  mean top probability, as the robot's mining ranks them) of 160 dim_underpass frames of
  split "devwalk", plus round(ratio x frames) frames drawn from the pool the way
  cloud_bridge.lifelong draws its rehearsal; the job's fine-tuning settings otherwise;
- scoring: 40 dim_underpass frames of split "dev" and the old task's val frames (which
  the gate uses anyway), for the base model and the candidate.

The base model and the data are the main job's cached ones (run scripts/main_job.sh
first); the dev frames are rendered once into the same cache.

  .venv/bin/python bench/update_recipe.py --json [--pool cloud --ratio 1.0 --epochs 40 --class-weights enet]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "models")]

from campus_sim.writer import generate  # noqa: E402
from cloud_bridge.lifelong import train_config  # noqa: E402
from rfnet.checkpoint import load_checkpoint  # noqa: E402
from rfnet.training import Trainer, evaluate, open_labelled  # noqa: E402
from rfnet.training_data import TorchSegmentationDataset  # noqa: E402
from seg_eval.base_model import ensure_base_model  # noqa: E402
from seg_eval.job_config import PRESETS  # noqa: E402
from seg_eval.job_data import prepare_data  # noqa: E402
from seg_eval.lifelong_stage import lifelong_config, rehearsal_index  # noqa: E402

NUM_CLASSES = 30


def dev_split(cfg, cache: Path, split: str, count: int) -> Path:
    """`count` new-task frames of `split` (streets of their own), rendered once."""
    d = cfg.data
    root = cache / f"devsplit-{cfg.key('data')}-{split}-{count}"
    if not (root / "complete").exists():
        generate(root, d.new_task, count, d.seed, d.height, d.width, split, d.workers, progress=False,
                 stride=d.eval_stride)
        (root / "complete").touch()
    return root / d.new_task / f"{split}.txt"


def least_confident(model, dataset: TorchSegmentationDataset, count: int) -> list[int]:
    model.eval()
    with torch.no_grad():
        conf = [torch.softmax(model(s.rgb[None], s.depth[None]), 1).amax(1).mean().item()
                for s in map(dataset.__getitem__, range(len(dataset)))]
    return sorted(np.argsort(conf)[:count].tolist())


def index_lines(index: Path) -> list[str]:
    """An Ianvs index's lines with absolute paths (to merge indexes of several folders)."""
    return [" ".join(str(index.parent / p) for p in line.split())
            for line in index.read_text().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="the main job's runs folder (its cache/)")
    ap.add_argument("--pool", choices=("old_task", "cloud"), help="default: the job's rehearsal_pool")
    ap.add_argument("--ratio", type=float, help="replayed frames per new frame (default: the job's)")
    ap.add_argument("--epochs", type=int, help="default: the job's")
    ap.add_argument("--class-weights", choices=("none", "enet"))
    ap.add_argument("--frames", type=int, default=40, help="labelled hard frames the update learns from")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = PRESETS["full"]
    given = {k: v for k, v in (("rehearsal_pool", args.pool), ("rehearsal_ratio", args.ratio),
                               ("epochs", args.epochs),
                               ("class_weights", args.class_weights)) if v is not None}
    cfg = dataclasses.replace(cfg, update=dataclasses.replace(cfg.update, **given))
    u, cache = cfg.update, args.runs / "cache"
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    torch.set_num_threads(u.threads)

    data = prepare_data(cfg, cache, say)
    base = ensure_base_model(cfg, data, cache, say)
    pool_lines = index_lines(rehearsal_index(cfg, data, cache, say))
    dev, walk = dev_split(cfg, cache, "dev", 40), dev_split(cfg, cache, "devwalk", 160)
    tc = train_config(lifelong_config(cfg, data, Path(), Path()).train)
    walk_lines = index_lines(walk)
    picks = least_confident(load_checkpoint(base).model,
                            TorchSegmentationDataset(open_labelled(walk, NUM_CLASSES), tc.preprocess), args.frames)
    replayed = np.random.default_rng(tc.seed).choice(len(pool_lines), min(round(u.rehearsal_ratio * len(picks)),
                                                                         len(pool_lines)), replace=False)
    train_index = cache / "update-recipe-train.txt"
    train_index.write_text("".join(line + "\n" for line in [walk_lines[i] for i in picks]
                                   + [pool_lines[i] for i in sorted(replayed.tolist())]))
    train = TorchSegmentationDataset(open_labelled(train_index, NUM_CLASSES), tc.preprocess, augment=tc.augment,
                                     seed=tc.seed, augment_cfg=tc.augment_config)

    say(f"training on {len(picks)} devwalk frames + {len(replayed)} replayed ({u.rehearsal_pool} pool), "
        f"{u.epochs} epochs")
    model = load_checkpoint(base).model
    t0 = time.monotonic()
    Trainer(model, tc).fit(train, progress=not args.json)
    train_s = time.monotonic() - t0

    def miou(m, index: Path) -> float:
        return evaluate(m, TorchSegmentationDataset(open_labelled(index, NUM_CLASSES), tc.preprocess), tc,
                        NUM_CLASSES).miou()
    before = load_checkpoint(base).model
    out = {"pool": u.rehearsal_pool, "ratio": u.rehearsal_ratio, "epochs": u.epochs, "new_frames": len(picks),
           "replayed_frames": len(replayed), "train_s": round(train_s, 1),
           "new_task_miou": {"base": miou(before, dev), "candidate": miou(model, dev)},
           "old_task_miou": {"base": miou(before, data.old_val), "candidate": miou(model, data.old_val)}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        n, o = out["new_task_miou"], out["old_task_miou"]
        print(f"{cfg.data.new_task} dev: {n['base']:.3f} -> {n['candidate']:.3f}; "
              f"{cfg.data.old_task} val: {o['base']:.3f} -> {o['candidate']:.3f}; {train_s:.0f} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())

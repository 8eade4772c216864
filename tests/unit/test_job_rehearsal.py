"""Which frames the main job's lifelong updates replay (UpdateConfig.rehearsal_pool)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from seg_eval.job_config import PRESETS, UpdateConfig
from seg_eval.job_data import JobData
from seg_eval.job_report import models_saw
from seg_eval.lifelong_stage import rehearsal_index


def _data(root: Path) -> JobData:
    return JobData(root, *(root / f"{n}.txt" for n in ("old_train", "old_val", "new_val", "old_test", "new_test",
                                                       "walk")), *(root / f"{n}.mcap" for n in ("a", "b", "c")))


def test_old_task_pool_replays_the_base_models_training_frames(tmp_path):
    cfg = dataclasses.replace(PRESETS["smoke"], update=UpdateConfig(rehearsal_pool="old_task"))
    assert rehearsal_index(cfg, _data(tmp_path), tmp_path / "cache") == tmp_path / "old_train.txt"
    assert "daylight_campus train frames per new frame" in models_saw(cfg, {})["update_pseudo"]


def test_cloud_pool_replays_the_cloud_models_cached_training_index(tmp_path):
    cfg = PRESETS["smoke"]
    cache = tmp_path / "cache"
    root = cache / f"cloud-data-{cfg.key('data', 'cloud')}"
    root.mkdir(parents=True)
    (root / "train.txt").write_text("x\n")
    (root / "complete").touch()   # rendered already: nothing is rendered again
    assert rehearsal_index(cfg, _data(tmp_path), cache, say=pytest.fail) == root / "train.txt"
    assert "cloud model's training data" in models_saw(cfg, {})["update_pseudo"]


def test_unknown_pool_is_refused():
    with pytest.raises(ValueError, match="rehearsal_pool='everything': use old_task or cloud"):
        UpdateConfig(rehearsal_pool="everything")

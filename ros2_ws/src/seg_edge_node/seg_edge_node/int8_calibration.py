"""Where the node's INT8 calibration frames come from (ROS-free).

With `precision: int8` an engine needs calibration frames from the robot's own
surroundings. The node takes them from the camera: it serves the float model, keeps
every `sample_every`-th preprocessed frame until it has `calibration_frames`, stores
the set (rfnet.engines.calibration) and then builds the INT8 engine in the background.
A set stored by an earlier run is used at once. Or `calibration_index` names an Ianvs
index file (e.g. frames recorded on this robot) to calibrate on at start.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfnet.engines import Calibration
from rfnet.preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb


@dataclass(frozen=True)
class Int8Config:
    calibration_frames: int = 16       # frames in a calibration set
    sample_every: int = 10             # keep every Nth segmented frame, so the set spans more of the scene
    calibration_index: str = ""        # Ianvs index file to calibrate on at start instead of the camera
    min_agreement: float = 0.8         # INT8 and float labels must agree on this share of the newest frame

    def validate(self) -> None:
        if self.calibration_frames < 1:
            raise ValueError(f"parameter int8.calibration_frames={self.calibration_frames}: use 1 or more")
        if self.sample_every < 1:
            raise ValueError(f"parameter int8.sample_every={self.sample_every}: use 1 or more")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"parameter int8.min_agreement={self.min_agreement}: use a value in [0, 1]")
        if self.calibration_index and not Path(self.calibration_index).expanduser().is_file():
            raise ValueError(f"parameter int8.calibration_index={self.calibration_index!r}: no such file; give "
                             "an Ianvs index (.txt) of frames from the robot's surroundings, or leave it empty "
                             "to calibrate on camera frames")


class CalibrationCollector:
    """Keeps every `sample_every`-th network input until a set is complete (thread-safe)."""

    def __init__(self, cfg: Int8Config, source: str):
        self._cfg = cfg
        self._source = source
        self._lock = threading.Lock()
        self._seen = 0
        self._batches: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.done = False

    @property
    def progress(self) -> tuple[int, int]:
        return len(self._batches), self._cfg.calibration_frames

    def offer(self, rgb: np.ndarray, depth: np.ndarray | None) -> Calibration | None:
        """Offer one frame's network inputs; returns the set once, when it is complete."""
        with self._lock:
            if self.done:
                return None
            self._seen += 1
            if (self._seen - 1) % self._cfg.sample_every:
                return None
            self._batches.append((rgb.copy(), None if depth is None else depth.copy()))
            if len(self._batches) < self._cfg.calibration_frames:
                return None
            self.done = True
            batches, self._batches = self._batches, []
        return Calibration(tuple(batches), f"{len(batches)} camera frames from {self._source}, "
                                           f"every {self._cfg.sample_every}th")


def calibration_from_index(index: str | Path, cfg: Int8Config, preprocess: PreprocessConfig,
                           use_depth: bool) -> Calibration:
    """Up to `calibration_frames` frames of an index file, evenly spaced, preprocessed as the node does."""
    from segdata import DatasetError, open_dataset

    try:
        dataset = open_dataset(Path(index).expanduser())
        picks = np.unique(np.linspace(0, len(dataset) - 1, min(cfg.calibration_frames, len(dataset))).astype(int))
        batches = []
        for i in picks:
            sample = dataset[int(i)]
            if use_depth and sample.depth_m is None:
                raise ValueError(f"{sample.name} has no depth image, and this RGB-D model needs depth")
            depth = preprocess_depth(sample.depth_m, preprocess)[0] if use_depth else None
            batches.append((preprocess_rgb(sample.rgb, preprocess), depth))
    except (DatasetError, OSError, ValueError) as e:
        raise ValueError(f"parameter int8.calibration_index={str(index)!r}: {e}") from e
    if not batches:
        raise ValueError(f"parameter int8.calibration_index={str(index)!r}: the index lists no frames")
    return Calibration(tuple(batches), f"{len(batches)} frames of {index}")

"""INT8 calibration sets: preprocessed frames that tell a quantizer the value ranges.

A set is a list of (rgb, depth) network inputs, exactly what `SegmentationEngine.infer`
takes. It depends on the input size, depth mode and preprocessing, not on the model,
so a robot keeps the set it gathered and calibrates every later model (updates, a new
TensorRT version) on the same frames. On disk, under `<cache_dir>/calibration/`:

    <sha256>.npz                 the frames (float16: a third of the float32 size, far
                                 finer than the INT8 steps it is used to choose)
    latest-<mode>-<H>x<W>.json   which set this input spec uses now, with its source

The set's sha256 (over the float32 arrays it returns) is part of every INT8 cache key.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model_io import INPUT_RGB
from .base import ModelSpec
from .engine_cache import calibration_sha256, write_atomic

log = logging.getLogger(__name__)

Batch = tuple[np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class Calibration:
    """Calibration frames for one input spec; `sha256` names them in cache keys."""

    batches: tuple[Batch, ...]
    source: str = ""                      # where the frames came from, for people
    sha256: str = field(default="")

    def __post_init__(self):
        if not self.batches:
            raise ValueError("a calibration set needs at least one frame")
        # Rounded to float16 here, as stored, so a set read back from disk has the same hash.
        object.__setattr__(self, "batches", tuple(
            (_f16(rgb), None if depth is None else _f16(depth)) for rgb, depth in self.batches))
        if not self.sha256:
            object.__setattr__(self, "sha256", calibration_sha256(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def _f16(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float16).astype(np.float32)


def _latest_path(cache_dir: Path, spec: ModelSpec) -> Path:
    return cache_dir / "calibration" / f"latest-{spec.mode}-{spec.input_height}x{spec.input_width}.json"


def save_calibration(cache_dir: str | Path, spec: ModelSpec, calibration: Calibration) -> Path:
    """Store the frames and make them the spec's current set; returns the .npz path."""
    folder = Path(cache_dir).expanduser() / "calibration"
    path = folder / f"{calibration.sha256}.npz"
    if not path.is_file():
        arrays = {f"rgb{i}": rgb.astype(np.float16) for i, (rgb, _) in enumerate(calibration.batches)}
        arrays.update({f"depth{i}": d.astype(np.float16) for i, (_, d) in enumerate(calibration.batches)
                       if d is not None})
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    pointer = {"sha256": calibration.sha256, "frames": len(calibration), "source": calibration.source,
               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(_latest_path(Path(cache_dir).expanduser(), spec), json.dumps(pointer, indent=1).encode())
    return path


def load_calibration(cache_dir: str | Path, spec: ModelSpec) -> Calibration | None:
    """The spec's current set, or None when there is none (or it is unreadable)."""
    cache_dir = Path(cache_dir).expanduser()
    try:
        pointer = json.loads(_latest_path(cache_dir, spec).read_text())
        with np.load(cache_dir / "calibration" / f"{pointer['sha256']}.npz") as z:
            count = sum(1 for k in z.files if k.startswith("rgb"))
            batches = tuple((z[f"rgb{i}"].astype(np.float32),
                             z[f"depth{i}"].astype(np.float32) if f"depth{i}" in z.files else None)
                            for i in range(count))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring the stored INT8 calibration set for %s (%s); it will be gathered again",
                    spec, e)
        return None
    calibration = Calibration(batches, str(pointer.get("source", "")))
    expected = spec.input_shapes()
    if calibration.batches[0][0].shape != expected[INPUT_RGB] or \
            (calibration.batches[0][1] is None) == spec.use_depth:
        log.warning("the stored INT8 calibration set does not fit %s; it will be gathered again", spec)
        return None
    return calibration

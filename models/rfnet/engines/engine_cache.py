"""On-disk cache of serialized TensorRT engines, so a robot builds each engine once.

A TensorRT engine is only valid for the exact ONNX graph, TensorRT version, GPU
model, precision and input shapes it was built for, so all of those go into the
key. Layout under the cache directory:

    <digest>.engine   the serialized engine
    <digest>.json     the readable key, the engine's size and sha256, build time
    <digest>.calib    INT8 calibration table (written by the TensorRT backend)

The .json is written last and is the commit marker: an .engine without a
matching .json (crash between the two writes), or one whose bytes do not match
the recorded sha256 (disk corruption, truncated copy), is a miss and is removed.
This module has no TensorRT dependency so the cache logic is tested in CI.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import durable_files

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
CACHE_DIR_ENV = "RFNET_ENGINE_CACHE"


def default_cache_dir() -> Path:
    """$RFNET_ENGINE_CACHE, else $XDG_CACHE_HOME/rfnet/engines, else ~/.cache/rfnet/engines."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rfnet" / "engines"


def calibration_sha256(batches: Iterable[Sequence[np.ndarray | None]]) -> str:
    """sha256 over INT8 calibration batches (tuples of arrays, None for an absent input).

    Dtype and shape are hashed too, so the same bytes reinterpreted differently
    give a different key.
    """
    h = hashlib.sha256()
    for batch in batches:
        h.update(b"batch")
        for arr in batch:
            if arr is None:
                h.update(b"none")
                continue
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on. `digest()` names the cache files."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str                          # "8.7"
    precision: str                                   # one of PRECISIONS
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    calibration_sha256: str | None = None            # INT8 only

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if (self.precision == "int8") != (self.calibration_sha256 is not None):
            raise ValueError("calibration_sha256 is required for int8 and only for int8")
        # Normalise so that lists and tuples (e.g. from JSON) give the same digest.
        object.__setattr__(self, "input_shapes", tuple(
            (str(name), tuple(int(d) for d in shape)) for name, shape in self.input_shapes))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["input_shapes"] = {name: list(shape) for name, shape in self.input_shapes}
        return d

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one
    (durable_files.write_atomic: same-directory temp file, fsynced, renamed), creating
    the cache directory if needed.

    The directory fsync after the rename is best effort: it is not supported
    everywhere (e.g. Windows), the data is already synced, and a rename lost in a
    power cut only costs a rebuild.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0o600, as tempfile.mkstemp created these files before: the cache is per user.
    durable_files.write_atomic(path, data, sync_dir=False, mode=0o600)
    durable_files.fsync_dir(path.parent, best_effort=True)


class EngineCache:
    """Serialized engines keyed by `EngineKey`. The directory is created on first `put`."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)

    def path_for(self, key: EngineKey) -> Path:
        return self.cache_dir / f"{key.digest()}.engine"

    def meta_path_for(self, key: EngineKey) -> Path:
        return self.cache_dir / f"{key.digest()}.json"

    def calibration_path(self, key: EngineKey) -> Path:
        return self.cache_dir / f"{key.digest()}.calib"

    def get(self, key: EngineKey) -> bytes | None:
        """The cached engine, or None on a miss. Invalid entries are removed."""
        engine_path = self.path_for(key)
        if not engine_path.exists():
            return None
        try:
            blob = engine_path.read_bytes()
            meta = json.loads(self.meta_path_for(key).read_text())
            problem = self._check(key, blob, meta)
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return blob
        log.warning("discarding invalid TensorRT engine cache entry %s (%s); it will be rebuilt",
                    engine_path, problem)
        self.invalidate(key)
        return None

    def put(self, key: EngineKey, blob: bytes, build_seconds: float | None = None) -> Path:
        """Store `blob` for `key`; returns the engine path."""
        engine_path = self.path_for(key)
        meta = {
            "key": key.to_dict(),
            "digest": key.digest(),
            "engine_bytes": len(blob),
            "engine_sha256": hashlib.sha256(blob).hexdigest(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": None if build_seconds is None else round(build_seconds, 3),
        }
        write_atomic(engine_path, blob)
        write_atomic(self.meta_path_for(key), json.dumps(meta, indent=2).encode())
        return engine_path

    def invalidate(self, key: EngineKey) -> None:
        """Remove the engine and its metadata (not the calibration table: it is
        independent of how the engine file fared)."""
        for path in (self.path_for(key), self.meta_path_for(key)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)

    @staticmethod
    def _check(key: EngineKey, blob: bytes, meta) -> str | None:
        if not isinstance(meta, dict):
            return "metadata is not a JSON object"
        if meta.get("digest") != key.digest():
            return "metadata belongs to another key"
        if meta.get("engine_bytes") != len(blob):
            return f"size {len(blob)} != recorded {meta.get('engine_bytes')}"
        if meta.get("engine_sha256") != hashlib.sha256(blob).hexdigest():
            return "sha256 mismatch"
        return None

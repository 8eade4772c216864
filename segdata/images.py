"""PNG reading and writing with errors that name the file.

Files are decoded from bytes rather than with cv2.imread, which returns None both for
a missing and for a corrupt file; the user needs to know which.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from durable_files import write_atomic

from .samples import DatasetError, Sample


def _decode(path: Path, flags: int, what: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{what} file missing: {path}") from None
    except OSError as e:
        raise DatasetError(f"cannot read {what} file {path}: {e}") from e
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise DatasetError(f"unreadable {what} image (not a PNG/JPEG opencv can decode): {path}")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """Any colour or grey image -> (H,W,3) uint8 RGB."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, "rgb"), cv2.COLOR_BGR2RGB)


def read_single_channel(path: Path, what: str) -> np.ndarray:
    """An 8- or 16-bit single-channel image, unchanged (the bit depth carries meaning)."""
    image = _decode(path, cv2.IMREAD_UNCHANGED, what)
    if image.ndim != 2:
        raise DatasetError(f"{what} image must have one channel, {path} has shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{what} image must be 8- or 16-bit, {path} is {image.dtype}")
    return image


def read_labels(path: Path, lut: np.ndarray) -> np.ndarray:
    labels = read_single_channel(path, "label")
    if labels.dtype != np.uint8:
        raise DatasetError(f"label image must be 8-bit class ids, {path} is 16-bit")
    return lut[labels]


def make_sample(name: str, rgb: np.ndarray, depth_m: np.ndarray | None, labels: np.ndarray | None,
                files: Sequence[Path]) -> Sample:
    """Sample(...), with the files it came from added to a size-mismatch error."""
    try:
        return Sample(rgb, depth_m, labels, name)
    except DatasetError as e:
        raise DatasetError(f"{e}; files: {', '.join(str(f) for f in files)}") from None


def write_png(path: Path, image: np.ndarray) -> None:
    """Write losslessly; rgb is given in RGB order. Atomic, so an interrupted import
    leaves no truncated PNG behind."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DatasetError(f"opencv could not encode {path}")
    write_atomic(path, encoded.tobytes(), sync_dir=False)

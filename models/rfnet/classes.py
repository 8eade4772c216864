"""The class list and palette, read from one data file."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

DEFAULT_CLASS_FILE = "cloud_robotics_classes.yaml"


class ClassFileError(ValueError):
    pass


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]
    colors: np.ndarray      # (N, 3) uint8 RGB
    ignore_label: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: class id -> colour; unknown ids are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = self.colors
        return lut


def load_class_list(path: str | Path | None = None) -> ClassList:
    """Read a class file; None means the packaged cloud-robotics 30 classes."""
    if path is None or str(path) == "":
        text = resources.files("rfnet.data").joinpath(DEFAULT_CLASS_FILE).read_text()
        source = DEFAULT_CLASS_FILE
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ClassFileError(f"cannot read class file {path}: {e}") from e
        source = str(path)
    try:
        doc = yaml.safe_load(text)
        entries = sorted(doc["classes"], key=lambda c: int(c["id"]))
        ids = [int(c["id"]) for c in entries]
        if ids != list(range(len(ids))):
            raise ClassFileError(f"{source}: class ids must be 0..N-1 without gaps, got {ids}")
        if not 0 < len(ids) < 255:
            raise ClassFileError(f"{source}: need between 1 and 254 classes, got {len(ids)}")
        names = tuple(str(c["name"]) for c in entries)
        colors = np.array([c.get("color", [0, 0, 0]) for c in entries], dtype=np.uint8).reshape(-1, 3)
        return ClassList(names, colors, int(doc.get("ignore_label", 255)))
    except ClassFileError:
        raise
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        raise ClassFileError(f"{source}: not a class file (need 'classes: [{{id, name, color}}]'): {e}") from e

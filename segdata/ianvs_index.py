"""KubeEdge-Ianvs index files: one sample per line, `rgb [depth] label`.

Paths are whitespace-separated (so they cannot contain spaces), relative to the
index file's folder or absolute. Blank lines and lines starting with `#` are
skipped. Depth PNGs are 16-bit millimetres ("mm16", 0 = no depth) or 8-bit images on
the original RFNet depth scale ("scale8"); "auto" tells them apart by bit depth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .depth import RFNET_DEPTH_UNITS_PER_METRE, mm16_to_metres, scale8_to_metres
from .images import make_sample, read_labels, read_rgb, read_single_channel
from .labels import LabelConfig
from .samples import DatasetError, Sample

DepthEncoding = Literal["auto", "mm16", "scale8"]
_MAX_LISTED = 10  # missing files listed by name in one error; the rest are counted


@dataclass(frozen=True)
class IanvsIndexSpec:
    index: Path
    depth_encoding: DepthEncoding = "auto"
    # Only used for "scale8" images; must equal the PreprocessConfig the model is
    # trained and run with, or the network gets a different depth scale than the robot.
    depth_units_per_metre: float = RFNET_DEPTH_UNITS_PER_METRE
    labels: LabelConfig = field(default_factory=LabelConfig)


@dataclass(frozen=True)
class IndexEntry:
    line: int           # 1-based line number in the index file
    rgb: Path
    depth: Path | None
    label: Path


def parse_index(index: Path) -> list[IndexEntry]:
    try:
        text = index.read_text()
    except FileNotFoundError:
        raise DatasetError(f"index file missing: {index}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read index file {index}: {e}") from e
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3):
            raise DatasetError(f"{index}, line {number}: expected 'rgb [depth] label' (2 or 3 paths), "
                               f"got {len(fields)} fields: {line.strip()!r}")
        # Path join keeps absolute paths as they are.
        paths = [index.parent / f for f in fields]
        entries.append(IndexEntry(number, paths[0], paths[1] if len(paths) == 3 else None, paths[-1]))
    return entries


class IanvsIndexDataset:
    def __init__(self, spec: IanvsIndexSpec):
        if spec.depth_encoding not in ("auto", "mm16", "scale8"):
            raise ValueError(f"depth_encoding must be auto, mm16 or scale8, got {spec.depth_encoding!r}")
        self.spec = spec
        self.name = str(spec.index)
        self.entries = parse_index(Path(spec.index))
        self._lut = spec.labels.lut()
        self._check_files_exist()

    def _check_files_exist(self) -> None:
        """All at once, when the dataset is opened: a training run should not die at
        sample 9000 of a dataset with a missing file."""
        missing = [f"line {e.line}: {p}" for e in self.entries
                   for p in (e.rgb, e.depth, e.label) if p is not None and not p.is_file()]
        if missing:
            listed = "\n  ".join(missing[:_MAX_LISTED])
            more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise DatasetError(f"{self.spec.index}: {len(missing)} file(s) missing:\n  {listed}{more}")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        e = self.entries[i]
        depth = None if e.depth is None else self._read_depth(e.depth)
        files = [p for p in (e.rgb, e.depth, e.label) if p is not None]
        return make_sample(e.rgb.stem, read_rgb(e.rgb), depth, read_labels(e.label, self._lut), files)

    def _read_depth(self, path: Path) -> np.ndarray:
        raw = read_single_channel(path, "depth")
        bits = 16 if raw.dtype == np.uint16 else 8
        encoding = self.spec.depth_encoding
        if encoding == "auto":
            encoding = "mm16" if bits == 16 else "scale8"
        if (encoding == "mm16") != (bits == 16):
            raise DatasetError(f"depth encoding {encoding} needs a {16 if encoding == 'mm16' else 8}-bit PNG, "
                               f"{path} is {bits}-bit")
        if encoding == "mm16":
            return mm16_to_metres(raw)
        return scale8_to_metres(raw, self.spec.depth_units_per_metre)

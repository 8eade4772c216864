"""The common dataset interface and format detection."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from .cityscapes import CityscapesDataset, CityscapesSpec, is_cityscapes_root
from .ianvs_index import IanvsIndexDataset, IanvsIndexSpec
from .samples import DatasetError, Sample


class SegmentationDataset(Protocol):
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...


def open_dataset(path_or_spec: str | Path | IanvsIndexSpec | CityscapesSpec, **options) -> SegmentationDataset:
    """A reader for an index `.txt` file (Ianvs) or a folder with leftImg8bit/ (Cityscapes).

    `options` are the fields of the matching spec (e.g. split="val" for Cityscapes,
    depth_encoding="scale8" for an index); with a spec object they override its fields.
    """
    if isinstance(path_or_spec, IanvsIndexSpec):
        return IanvsIndexDataset(replace(path_or_spec, **options))
    if isinstance(path_or_spec, CityscapesSpec):
        return CityscapesDataset(replace(path_or_spec, **options))
    path = Path(path_or_spec)
    if path.is_file() and path.suffix == ".txt":
        return IanvsIndexDataset(IanvsIndexSpec(path, **options))
    if path.is_dir() and is_cityscapes_root(path):
        return CityscapesDataset(CityscapesSpec(path, **options))
    if path.is_dir():
        indexes = sorted(p.name for p in path.glob("*.txt"))
        hint = f"; give one of its index files: {', '.join(indexes)}" if indexes else ""
        raise DatasetError(f"{path}: not a Cityscapes folder (no leftImg8bit/){hint}")
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}")
    raise DatasetError(f"{path}: not a dataset (need an Ianvs index .txt file or a Cityscapes folder)")

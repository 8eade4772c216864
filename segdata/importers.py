"""Convert any supported dataset into the project's canonical layout:

    DIR/rgb/<name>.png      8-bit RGB
    DIR/depth/<name>.png    16-bit millimetres, 0 = no depth
    DIR/label/<name>.png    8-bit class ids, 255 = ignore
    DIR/<split>.txt         Ianvs index, paths relative to DIR

The index is written last, so an interrupted import leaves no index claiming files
that were never written. Several splits can be imported into one DIR.
"""
from __future__ import annotations

from pathlib import Path

from durable_files import fsync_dir, write_atomic

from .dataset import SegmentationDataset
from .depth import metres_to_mm16
from .images import write_png
from .samples import DatasetError

FOLDERS = ("rgb", "depth", "label")


def import_dataset(dataset: SegmentationDataset, out_dir: Path, split: str) -> Path:
    """Write every sample of `dataset` to `out_dir`; returns the index file."""
    out_dir = Path(out_dir)
    for folder in FOLDERS:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    lines, seen = [], {}
    for i in range(len(dataset)):
        sample = dataset[i]
        if sample.name in seen:
            raise DatasetError(f"{dataset.name}: samples {seen[sample.name]} and {i} are both named "
                               f"{sample.name!r}; the canonical layout needs unique names")
        seen[sample.name] = i
        if sample.labels is None:
            raise DatasetError(f"{dataset.name}: sample {sample.name} has no labels; an index line needs them")
        paths = [f"rgb/{sample.name}.png"]
        write_png(out_dir / paths[0], sample.rgb)
        if sample.depth_m is not None:
            paths.append(f"depth/{sample.name}.png")
            write_png(out_dir / paths[-1], metres_to_mm16(sample.depth_m))
        paths.append(f"label/{sample.name}.png")
        write_png(out_dir / paths[-1], sample.labels)
        lines.append(" ".join(paths))
    for folder in FOLDERS:
        fsync_dir(out_dir / folder, best_effort=True)
    index = out_dir / f"{split}.txt"
    write_atomic(index, ("\n".join(lines) + "\n").encode())
    return index


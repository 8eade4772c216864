"""Cityscapes-style folders, paired by the `<name>` stem (`<city>_<seq>_<frame>`):

    root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png        rgb
    root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png    labels (or _labelIds.png)
    root/disparity/<split>/<city>/<name>_disparity.png            optional 16-bit disparity
    root/camera/<split>/<city>/<name>_camera.json                 baseline and fx for it
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .depth import cityscapes_disparity_to_metres
from .images import make_sample, read_labels, read_rgb, read_single_channel
from .labels import LabelConfig
from .samples import DatasetError, Sample

# labelId -> trainId for the 19 evaluated classes; every other labelId (void, parking,
# rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) is 255.
# Source: cityscapesScripts, cityscapesscripts/helpers/labels.py, `labels` table.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,    # road
    8: 1,    # sidewalk
    11: 2,   # building
    12: 3,   # wall
    13: 4,   # fence
    17: 5,   # pole
    19: 6,   # traffic light
    20: 7,   # traffic sign
    21: 8,   # vegetation
    22: 9,   # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

LabelKind = Literal["auto", "labelTrainIds", "labelIds"]
_SUFFIX = {"rgb": "_leftImg8bit.png", "labelTrainIds": "_gtFine_labelTrainIds.png",
           "labelIds": "_gtFine_labelIds.png", "disparity": "_disparity.png", "camera": "_camera.json"}
_FOLDER = {"rgb": "leftImg8bit", "labelTrainIds": "gtFine", "labelIds": "gtFine",
           "disparity": "disparity", "camera": "camera"}
_MAX_LISTED = 10


@dataclass(frozen=True)
class CityscapesSpec:
    root: Path
    split: str | None = None            # None: the only split under leftImg8bit/
    # "auto": labelTrainIds files where the split has them, else labelIds mapped with
    # CITYSCAPES_LABEL_ID_TO_TRAIN_ID.
    label_kind: LabelKind = "auto"
    num_classes: int | None = None      # trainIds >= num_classes -> 255
    use_disparity: bool = True          # read disparity/<split> where it exists
    # A disparity image without its camera json cannot be turned into metres: an error,
    # unless this is True, in which case such samples have no depth.
    disparity_without_camera_is_missing: bool = False


def is_cityscapes_root(path: Path) -> bool:
    return (path / "leftImg8bit").is_dir()


def _splits(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())


def _scan(root: Path, split: str, kind: str) -> dict[str, Path]:
    """{name stem: file} for one file kind of one split; {} if its folder is absent."""
    folder = root / _FOLDER[kind] / split
    suffix = _SUFFIX[kind]
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob(f"*{suffix}")) if folder.is_dir() else ():
        name = path.name[: -len(suffix)]
        if name in found:
            raise DatasetError(f"two {kind} files for sample {name}: {found[name]} and {path}")
        found[name] = path
    return found


def _unpaired(what: str, names: set[str], files: dict[str, Path]) -> list[str]:
    return [f"{what}: {files[n]}" for n in sorted(names)]


class CityscapesDataset:
    def __init__(self, spec: CityscapesSpec):
        root = Path(spec.root)
        if not is_cityscapes_root(root):
            raise DatasetError(f"not a Cityscapes folder (no leftImg8bit/ in it): {root}")
        split = spec.split
        if split is None:
            splits = _splits(root)
            if len(splits) != 1:
                raise DatasetError(f"{root}: give the split, leftImg8bit/ has {splits or 'none'}")
            split = splits[0]
        if not (root / "leftImg8bit" / split).is_dir():
            raise DatasetError(f"{root}: no split {split!r}; leftImg8bit/ has {_splits(root)}")
        self.spec, self.split = spec, split
        self.name = f"cityscapes {root} {split}"

        rgb = _scan(root, split, "rgb")
        self.label_kind, labels = self._label_files(root, split)
        disparity = _scan(root, split, "disparity") if spec.use_disparity else {}
        cameras = _scan(root, split, "camera") if disparity else {}
        self._check_pairs(rgb, labels, disparity, cameras)
        if not rgb:
            raise DatasetError(f"{root / 'leftImg8bit' / split}: no *_leftImg8bit.png files")

        self.names = sorted(rgb)
        self._rgb, self._labels, self._disparity, self._cameras = rgb, labels, disparity, cameras
        label_map = CITYSCAPES_LABEL_ID_TO_TRAIN_ID if self.label_kind == "labelIds" else None
        self._lut = LabelConfig(spec.num_classes, label_map).lut()

    def _label_files(self, root: Path, split: str) -> tuple[str, dict[str, Path]]:
        kind = self.spec.label_kind
        if kind not in ("auto", "labelTrainIds", "labelIds"):
            raise ValueError(f"label_kind must be auto, labelTrainIds or labelIds, got {kind!r}")
        if kind == "auto":
            train_ids = _scan(root, split, "labelTrainIds")
            return ("labelTrainIds", train_ids) if train_ids else ("labelIds", _scan(root, split, "labelIds"))
        return kind, _scan(root, split, kind)

    def _check_pairs(self, rgb, labels, disparity, cameras) -> None:
        """Every image needs its labels (and its disparity, when the split has any) and
        vice versa; one error lists all the strays, so they can be fixed in one go."""
        images = set(rgb)
        problems = (_unpaired(f"image without {self.label_kind} labels", images - set(labels), rgb)
                    + _unpaired("labels without image", set(labels) - images, labels))
        if disparity:
            problems += (_unpaired("image without disparity", images - set(disparity), rgb)
                         + _unpaired("disparity without image", set(disparity) - images, disparity))
            no_camera = set(disparity) - set(cameras)
            if self.spec.disparity_without_camera_is_missing:
                for name in no_camera:
                    del disparity[name]
            else:
                problems += [f"{p} (or set disparity_without_camera_is_missing to use it without depth)"
                             for p in _unpaired("disparity without camera json", no_camera, disparity)]
        if problems:
            listed = "\n  ".join(problems[:_MAX_LISTED])
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise DatasetError(f"{self.spec.root} split {self.split}: {len(problems)} unpaired file(s):\n"
                               f"  {listed}{more}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        name = self.names[i]
        files = [self._rgb[name], self._labels[name]]
        depth = None
        if name in self._disparity:
            files += [self._disparity[name], self._cameras[name]]
            depth = self._read_depth(self._disparity[name], self._cameras[name])
        return make_sample(name, read_rgb(files[0]), depth, read_labels(files[1], self._lut), files)

    @staticmethod
    def _read_depth(disparity_path: Path, camera_path: Path) -> np.ndarray:
        disparity = read_single_channel(disparity_path, "disparity")
        if disparity.dtype != np.uint16:
            raise DatasetError(f"Cityscapes disparity must be 16-bit, {disparity_path} is 8-bit")
        try:
            camera = json.loads(camera_path.read_text())
            baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"camera file {camera_path}: need extrinsic.baseline and intrinsic.fx "
                               f"({type(e).__name__}: {e})") from e
        if not (baseline > 0 and fx > 0):
            raise DatasetError(f"camera file {camera_path}: baseline {baseline} and fx {fx} must be positive")
        return cityscapes_disparity_to_metres(disparity, baseline, fx)


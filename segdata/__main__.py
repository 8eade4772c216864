"""python -m segdata import --from {cityscapes,ianvs} PATH --out DIR [--split S]
python -m segdata info PATH"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cityscapes import CityscapesSpec, is_cityscapes_root
from .dataset import open_dataset
from .depth import RFNET_DEPTH_UNITS_PER_METRE
from .ianvs_index import IanvsIndexSpec
from .importers import import_dataset
from .info import summarize
from .labels import LabelConfig
from .samples import DatasetError


def _reader_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--num-classes", type=int, help="label ids >= this become 255 (ignore)")
    ianvs = p.add_argument_group("Ianvs index")
    ianvs.add_argument("--depth-encoding", choices=("auto", "mm16", "scale8"), default="auto")
    ianvs.add_argument("--depth-units-per-metre", type=float, default=RFNET_DEPTH_UNITS_PER_METRE,
                       help="scale of 8-bit depth images (must match the model's PreprocessConfig)")
    cs = p.add_argument_group("Cityscapes")
    cs.add_argument("--split", help="Cityscapes split to read (default: the only one); name of the output index")
    cs.add_argument("--label-kind", choices=("auto", "labelTrainIds", "labelIds"), default="auto")
    cs.add_argument("--no-disparity", action="store_true", help="ignore disparity/ (no depth)")
    cs.add_argument("--disparity-without-camera-is-missing", action="store_true",
                    help="samples whose camera json is missing get no depth instead of an error")
    return p


def _spec(fmt: str, path: Path, args: argparse.Namespace) -> IanvsIndexSpec | CityscapesSpec:
    if fmt == "ianvs":
        return IanvsIndexSpec(path, args.depth_encoding, args.depth_units_per_metre, LabelConfig(args.num_classes))
    return CityscapesSpec(path, args.split, args.label_kind, args.num_classes, not args.no_disparity,
                          args.disparity_without_camera_is_missing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segdata", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", parents=[_reader_options()],
                         help="convert to DIR/{rgb,depth,label}/<name>.png + DIR/<split>.txt")
    imp.add_argument("--from", dest="source", nargs=2, metavar=("FORMAT", "PATH"), required=True,
                     help="cityscapes ROOT or ianvs INDEX.txt")
    imp.add_argument("--out", type=Path, required=True)
    info = sub.add_parser("info", parents=[_reader_options()], help="counts, sizes, class histogram")
    info.add_argument("path", type=Path)
    args = ap.parse_args(argv)

    try:
        if args.command == "import":
            fmt, path = args.source[0], Path(args.source[1])
            if fmt not in ("cityscapes", "ianvs"):
                ap.error(f"--from: format must be cityscapes or ianvs, got {fmt!r}")
            dataset = open_dataset(_spec(fmt, path, args))
            split = args.split or (path.stem if fmt == "ianvs" else dataset.split)
            index = import_dataset(dataset, args.out, split)
            print(f"imported {len(dataset)} samples from {dataset.name} -> {index}")
        else:
            # Anything that is neither goes to open_dataset as a bare path, for its error.
            fmt = "ianvs" if args.path.suffix == ".txt" else "cityscapes" if is_cityscapes_root(args.path) else None
            dataset = open_dataset(_spec(fmt, args.path, args) if fmt else args.path)
            print("\n".join(summarize(dataset).lines()))
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn an Ianvs dataset index into a rosbag2 of camera frames plus ground-truth labels.

Each index line is one sample, paths relative to the index file's folder:
    rgb.png [depth.png] label.png
(depth: 16-bit PNG in millimetres; label: 8-bit class ids). The bag gets, per
sample and all with the same header stamp (frames 1/rate s apart from a fixed
start time, so the same index always gives the same bag):
    /camera/color/image_raw                    sensor_msgs/Image rgb8
    /camera/aligned_depth_to_color/image_raw   sensor_msgs/Image 16UC1 (if the index has depth)
    /camera/color/camera_info                  sensor_msgs/CameraInfo
    /ground_truth/labels                       sensor_msgs/Image mono8

  python -m seg_edge_node.bag_from_dataset --index DATASET/test.txt --out run.mcap \
      [--storage mcap|sqlite3] [--rate 10] [--frame-id camera_color_optical_frame] [--camera-yaml camera.yaml]

camera.yaml holds fx, fy, cx, cy, width, height (pixels); without it the
intrinsics are a default derived from the image size.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from segdata import DatasetError
from segdata.ianvs_index import IndexEntry, parse_index

from .bag_io import STORAGES, BagError, open_writer
from .image_conversion import mono8_to_image, rgb_to_image

RGB_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
LABELS_TOPIC = "/ground_truth/labels"
# 2020-09-13T12:26:40Z: fixed, so bags are reproducible; clearly not "now" when a
# replay forgets to re-stamp.
START_NS = 1_600_000_000 * 1_000_000_000
# Without camera.yaml: the horizontal field of view of a RealSense D435 colour camera.
DEFAULT_HFOV_DEG = 69.0
CAMERA_YAML_KEYS = ("fx", "fy", "cx", "cy", "width", "height")


Sample = IndexEntry   # one index line: line number, rgb, depth (or None), label paths


def read_index(index: Path) -> list[Sample]:
    """Parse an Ianvs index file (segdata's parser); every referenced file must exist."""
    if not index.is_file():
        raise BagError(f"index file {index} does not exist")
    try:
        samples = parse_index(index)
    except DatasetError as e:
        raise BagError(f"{e} (expected 'rgb.png [depth.png] label.png', paths relative to {index.parent})") from None
    missing = [f"{index}:{s.line}: {p}" for s in samples for p in (s.rgb, s.depth, s.label)
               if p is not None and not p.is_file()]
    if missing:
        raise BagError(f"{len(missing)} file(s) named in the index do not exist (paths are relative to "
                       f"{index.parent}):\n  " + "\n  ".join(missing[:10]))
    if not samples:
        raise BagError(f"index file {index} lists no samples")
    with_depth = {s.depth is not None for s in samples}
    if len(with_depth) > 1:
        raise BagError(f"{index}: some lines have a depth image and some do not; the node pairs every "
                       "colour frame with a depth frame, so use one layout for all lines")
    return samples


def _imread(path: Path, flags: int, want: str) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise BagError(f"cannot decode {path} as an image ({want})")
    return image


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(rgb (H,W,3) uint8, depth (H,W) uint16 mm or None, labels (H,W) uint8), sizes checked."""
    rgb = _imread(sample.rgb, cv2.IMREAD_COLOR_RGB, "colour")
    depth = None
    if sample.depth is not None:
        depth = _imread(sample.depth, cv2.IMREAD_UNCHANGED, "16-bit depth")
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise BagError(f"{sample.depth}: depth must be a single-channel 16-bit PNG in millimetres, "
                           f"got {depth.dtype} with shape {depth.shape}")
    labels = _imread(sample.label, cv2.IMREAD_UNCHANGED, "8-bit labels")
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise BagError(f"{sample.label}: labels must be a single-channel 8-bit PNG of class ids, "
                       f"got {labels.dtype} with shape {labels.shape} (a colour-coded label image "
                       "must be mapped to class ids first)")
    for name, image in (("depth", depth), ("labels", labels)):
        if image is not None and image.shape[:2] != rgb.shape[:2]:
            raise BagError(f"index line {sample.line}: {name} is {image.shape[1]}x{image.shape[0]} but rgb is "
                           f"{rgb.shape[1]}x{rgb.shape[0]}; depth and labels must be aligned to the colour image")
    return rgb, depth, labels


def depth_mm_to_image(depth_mm: np.ndarray, header: Header) -> Image:
    """(H, W) uint16 millimetres -> 16UC1, bytes exactly as in the PNG (no metres round trip)."""
    msg = Image(header=header, height=depth_mm.shape[0], width=depth_mm.shape[1], encoding="16UC1",
                is_bigendian=0, step=depth_mm.shape[1] * 2)
    msg.data = depth_mm.astype("<u2").tobytes()
    return msg


def load_camera_yaml(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise BagError(f"camera file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise BagError(f"{path} is not a YAML mapping; it needs {', '.join(CAMERA_YAML_KEYS)} in pixels")
    missing = [k for k in CAMERA_YAML_KEYS if k not in data]
    if missing:
        raise BagError(f"{path} lacks {', '.join(missing)}; it needs {', '.join(CAMERA_YAML_KEYS)} in pixels")
    try:
        return {k: float(data[k]) for k in CAMERA_YAML_KEYS}
    except (TypeError, ValueError):
        raise BagError(f"{path}: {', '.join(CAMERA_YAML_KEYS)} must be numbers") from None


def default_intrinsics(width: int, height: int) -> dict[str, float]:
    f = width / (2.0 * math.tan(math.radians(DEFAULT_HFOV_DEG) / 2.0))
    return {"fx": f, "fy": f, "cx": width / 2.0, "cy": height / 2.0, "width": width, "height": height}


def camera_info(intrinsics: dict[str, float], header: Header) -> CameraInfo:
    """An undistorted pinhole CameraInfo (the dataset images are already rectified)."""
    fx, fy, cx, cy = (intrinsics[k] for k in ("fx", "fy", "cx", "cy"))
    return CameraInfo(header=header, width=int(intrinsics["width"]), height=int(intrinsics["height"]),
                      distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def frame_header(index: int, rate: float, frame_id: str) -> Header:
    stamp_ns = START_NS + round(index * 1e9 / rate)
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def write_bag(samples: list[Sample], out: Path, storage: str | None, rate: float, frame_id: str,
              intrinsics: dict[str, float] | None) -> dict[str, int]:
    """Write one frame per sample; returns messages per topic."""
    with open_writer(out, storage) as bag:
        for i, sample in enumerate(samples):
            rgb, depth, labels = load_sample(sample)
            height, width = labels.shape
            if intrinsics is None:
                intrinsics = default_intrinsics(width, height)
            if (intrinsics["width"], intrinsics["height"]) != (width, height):
                raise BagError(f"index line {sample.line}: image is {width}x{height} but the camera info says "
                               f"{intrinsics['width']:g}x{intrinsics['height']:g}")
            header = frame_header(i, rate, frame_id)
            t = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
            bag.write_msg(RGB_TOPIC, t, rgb_to_image(rgb, header))
            if depth is not None:
                bag.write_msg(DEPTH_TOPIC, t, depth_mm_to_image(depth, header))
            bag.write_msg(INFO_TOPIC, t, camera_info(intrinsics, header))
            bag.write_msg(LABELS_TOPIC, t, mono8_to_image(labels, header))
        return dict(bag.counts)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True, type=Path, help="Ianvs index file, e.g. DATASET/test.txt")
    p.add_argument("--out", required=True, type=Path,
                   help="bag to create: a .mcap or .db3 file, or a bag directory for any other name")
    p.add_argument("--storage", choices=list(STORAGES),
                   help="bag storage (default: from the --out suffix, else mcap)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of bag time")
    p.add_argument("--frame-id", default="camera_color_optical_frame")
    p.add_argument("--camera-yaml", type=Path, help="intrinsics: fx, fy, cx, cy, width, height")
    args = p.parse_args(argv)
    if not args.rate > 0:
        p.error(f"--rate must be > 0, got {args.rate}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        samples = read_index(args.index)
        intrinsics = load_camera_yaml(args.camera_yaml) if args.camera_yaml else None
        if intrinsics is None:
            print(f"bag_from_dataset: no --camera-yaml; camera_info uses a {DEFAULT_HFOV_DEG:g} degree "
                  "horizontal field of view", file=sys.stderr)
        t0 = time.perf_counter()
        counts = write_bag(samples, args.out, args.storage, args.rate, args.frame_id, intrinsics)
    except BagError as e:
        print(f"bag_from_dataset: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"bag": str(args.out), "frames": len(samples), "messages": counts,
                      "seconds": round(seconds, 3), "frames_per_s": round(len(samples) / seconds, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

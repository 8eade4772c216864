"""Dataset files: PNGs per modality, the Ianvs index file and camera.yaml.

    out_dir/<task>/rgb/<split>_00000.png      8-bit RGB
    out_dir/<task>/depth/<split>_00000.png    16-bit depth in millimetres, 0 = invalid
    out_dir/<task>/label/<split>_00000.png    8-bit class ids, 255 = ignore
    out_dir/<task>/instance/<split>_00000.png 16-bit object instance ids (only with instances=True;
                                              ground truth for the benchmark's SAM stand-in, not in the index)
    out_dir/<task>/<split>.txt                "rgb/... depth/... label/..." per line, relative to this folder
    out_dir/<task>/camera.yaml                fx, fy, cx, cy, width, height, depth_scale_mm
"""
from __future__ import annotations

import os
import zlib
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from .camera import Intrinsics
from .tasks import Frame, get_task, render

MODALITIES = ("rgb", "depth", "label")


def split_seed(seed: int, split: str) -> int:
    """The render seed of a split: `seed` itself for "train", another street set for any
    other split, so train and test drawn with one --seed never share frames."""
    return seed if split == "train" else (seed * 1_000_003 + zlib.crc32(split.encode())) % 2 ** 31


INSTANCE_DIR = "instance"


def _render_one(job: tuple) -> tuple[int, Frame]:
    task, index, seed, height, width, instances = job
    return index, render(task, index, seed, height, width, instances=instances)


def write_frame(task_dir: Path, name: str, frame: Frame) -> str:
    """Write one frame's three PNGs (and its instance map if it has one); returns its
    index-file line."""
    paths = [f"{m}/{name}.png" for m in MODALITIES]
    depth_mm = np.clip(np.round(frame.depth_m * 1000.0), 0, 65535).astype(np.uint16)
    images = [cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR), depth_mm, frame.labels]
    files = list(paths)
    if frame.instances is not None:
        if frame.instances.max(initial=0) > 65535:
            raise ValueError(f"{name}: more than 65536 instances do not fit a 16-bit PNG")
        files.append(f"{INSTANCE_DIR}/{name}.png")
        images.append(frame.instances.astype(np.uint16))
    for rel, img in zip(files, images):
        if not cv2.imwrite(str(task_dir / rel), img):
            raise OSError(f"cannot write {task_dir / rel}")
    return " ".join(paths)


def instance_path(index_file: str | os.PathLike, label_rel: str) -> Path:
    """The instance map written next to the label `label_rel` of an index file's line."""
    rel = Path(label_rel)
    return Path(index_file).parent / INSTANCE_DIR / rel.name


def read_instances(path: str | os.PathLike) -> np.ndarray:
    """An instance map written by write_frame, as (H, W) int32."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise FileNotFoundError(f"{path}: no instance map (render the split with instances=True)")
    return image.astype(np.int32)


def generate(out_dir: str | os.PathLike, task: str, count: int, seed: int, height: int = 480, width: int = 640,
             split: str = "train", workers: int = 1, progress: bool = True, stride: int = 1,
             instances: bool = False) -> Path:
    """Render frames 0, stride, 2*stride, ... (count of them) of `task` (see split_seed) into
    out_dir/<task>; returns the index file. A stride spreads a small set over more streets
    (each street is `frames_per_street` consecutive frames). With `instances`, each frame's
    ground-truth instance map goes to instance/ (see campus_sim.instances)."""
    t = get_task(task)
    task_dir = Path(out_dir) / t.name
    for m in MODALITIES + ((INSTANCE_DIR,) if instances else ()):
        (task_dir / m).mkdir(parents=True, exist_ok=True)
    if stride < 1:
        raise ValueError(f"stride must be 1 or more, got {stride}")
    jobs = [(t.name, i * stride, split_seed(seed, split), height, width, instances) for i in range(count)]
    lines = [""] * count
    bar = tqdm(total=count, desc=f"{t.name}/{split}", unit="frame", disable=not progress)
    if workers > 1:
        # Whole streets per worker: frames of one street share its cached layout.
        # Spawned, not forked: a fork copies the caller's locks, and one held by another
        # thread at that moment (torch, OpenCV) deadlocks the worker.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            chunk = max(1, t.walk.frames_per_street // stride)
            for index, frame in pool.imap_unordered(_render_one, jobs, chunksize=chunk):
                i = index // stride
                lines[i] = write_frame(task_dir, f"{split}_{i:05d}", frame)
                bar.update()
    else:
        for job in jobs:
            index, frame = _render_one(job)
            i = index // stride
            lines[i] = write_frame(task_dir, f"{split}_{i:05d}", frame)
            bar.update()
    bar.close()
    intr = Intrinsics.for_size(height, width).as_dict()
    (task_dir / "camera.yaml").write_text(yaml.safe_dump({**intr, "depth_scale_mm": 1}, sort_keys=False))
    index = task_dir / f"{split}.txt"
    tmp = index.with_suffix(".txt.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(index)
    return index


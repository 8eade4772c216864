"""python -m campus_sim --out DIR --task daylight_campus --count 200 --seed 1 --split train [--height --width]"""
from __future__ import annotations

import argparse
import sys

from .preview import save_side_by_side
from .tasks import TASKS, get_task, render
from .writer import generate, split_seed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m campus_sim", description="Render a campus RGB-D segmentation task "
                                "to PNGs with an Ianvs index file (see campus_sim.writer).")
    p.add_argument("--out", help="output folder; frames go to OUT/<task>/")
    p.add_argument("--task", default="daylight_campus", help="see --list-tasks")
    p.add_argument("--count", type=int, default=200, help="frames to render")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", help="file prefix and index name; non-train splits get other streets")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--stride", type=int, default=1, help="render every STRIDE-th frame (more streets per frame)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")
    p.add_argument("--preview", metavar="PNG", help="also save RGB | labels | depth of the first frame here")
    p.add_argument("--list-tasks", action="store_true", help="print the tasks and exit")
    a = p.parse_args(argv)
    if a.list_tasks:
        for t in TASKS.values():
            print(f"{t.name}\n    {t.description}")
        return 0
    if not a.out:
        p.error("--out is required")
    if a.count < 1 or a.height < 8 or a.width < 8 or a.stride < 1:
        p.error("--count and --stride must be >= 1 and --height/--width >= 8")
    try:
        get_task(a.task)
    except ValueError as e:
        p.error(str(e))
    index = generate(a.out, a.task, a.count, a.seed, a.height, a.width, a.split, a.workers, stride=a.stride)
    if a.preview:
        save_side_by_side(render(a.task, 0, split_seed(a.seed, a.split), a.height, a.width), a.preview)
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""campus_sim: a procedural RGB-D semantic segmentation benchmark seen from a robot dog.

Ray-cast campus streets labelled with the 30 KubeEdge-Ianvs cloud-robotics classes,
with metric depth, in tasks (domains) that differ in light, sensor and objects.

    from campus_sim import render, generate, list_tasks
    frame = render("daylight_campus", index=0, seed=1)          # Frame(rgb, depth_m, labels, ...)
    generate("out", "dim_underpass", count=200, seed=1)          # PNGs + Ianvs index + camera.yaml
"""
from .classes import IGNORE, NUM_CLASSES, Cls
from .tasks import TASKS, Frame, Task, get_task, list_tasks, render
from .writer import generate

__all__ = ["Cls", "Frame", "IGNORE", "NUM_CLASSES", "TASKS", "Task", "generate", "get_task", "list_tasks", "render"]

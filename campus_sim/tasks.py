"""Tasks (domains) and rendering one frame: render(task, index, seed, height, width) -> Frame.

A frame is a pure function of (task, index, seed, size). Frame `index` belongs to
street index // frames_per_street and is frame index % frames_per_street of the
walk along it, so consecutive indices are consecutive views of one walk.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .camera import Intrinsics, Rays
from .instances import instance_map
from .raycast import cast
from .scene import Rates, SceneConfig, Street, WalkConfig
from .sensor import DepthConfig, SensorConfig, expose, measure_depth
from .shading import LightConfig, Lighting, shade

SODIUM = (1.0, 0.55, 0.2)
COLD_LED = (0.7, 0.85, 1.0)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    scene: SceneConfig = field(default_factory=SceneConfig)
    walk: WalkConfig = field(default_factory=WalkConfig)
    light: LightConfig = field(default_factory=LightConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)


@dataclass
class Frame:
    rgb: np.ndarray            # (H, W, 3) uint8
    depth_m: np.ndarray        # (H, W) float32 z-depth in metres, 0 = no measurement
    labels: np.ndarray         # (H, W) uint8 class ids, 255 = ignore
    intrinsics: Intrinsics
    pose: np.ndarray           # (4, 4) camera-to-world (x along the street, z up)
    # (H, W) int32 ground-truth object instances (campus_sim.instances); class-agnostic
    # ids for the benchmark's SAM stand-in, None unless render(..., instances=True).
    instances: np.ndarray | None = None


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("daylight_campus",
         "Sunny campus front: roads, sidewalks and curbs, buildings with doors and windows, raised entrances "
         "with stairs and ramps, poles and signs, trees, lawns, flowerbeds and running tracks, people, parked cars.",
         scene=SceneConfig(rates=Rates(truck=0.005, bus=0.005, rider=0.01, motorcycle=0.01)),
         sensor=SensorConfig(awb=0.2)),
    Task("dim_underpass",
         "Night and underpasses: low exposure with strong noise and motion blur, sodium or cold-LED colour "
         "cast, lamp glare, glass facades mirroring the sky, wet mirror-like roads; bins, hydrants, CCTV "
         "cameras, manholes and queue belts several times as frequent as in daylight_campus.",
         scene=SceneConfig(rates=Rates(person=0.3, parked_car=0.8, dustbin=0.5, hydrant=0.3, cctv=0.3, belt=0.15,
                                       manhole=0.8, flowerbed=0.15, tree=0.5),
                           underpass=0.5, glass_facades=0.6, window_reflect=0.6, night=True, lit_windows=0.3,
                           lamp_colours=(SODIUM, COLD_LED), wet=(0.3, 0.9)),
         light=LightConfig(night=True, clouds=(0.2, 0.9), ambient=(0.012, 0.012, 0.018),
                           zenith=(0.006, 0.008, 0.02), horizon=(0.05, 0.035, 0.03), cloud_colour=(0.06, 0.04, 0.035)),
         sensor=SensorConfig(key=0.05, max_gain=3.0, awb=0.3, read_noise=0.015, shot_noise=0.03, blur=0.9,
                             motion_blur=7.0, vignetting=0.35, bloom=0.25, glare=1.0),
         depth=DepthConfig(noise=(0.004, 0.003), holes=2.5, edge_dropout=0.6)),
    Task("night_campus",
         "daylight_campus's streets after dark: street lamps (warm or cold), some lit windows, damp roads, a "
         "camera raising its gain (noise, blur, glare). Generated conditions for training the cloud's own model "
         "on more than daylight: its own streets and daylight_campus's object rates, with some underpasses.",
         scene=SceneConfig(rates=Rates(truck=0.005, bus=0.005, rider=0.01, motorcycle=0.01), night=True, underpass=0.3,
                           lit_windows=0.25, lamp_colours=((1.0, 0.62, 0.28), (0.75, 0.88, 1.0)), wet=(0.0, 0.6)),
         light=LightConfig(night=True, clouds=(0.0, 0.9), ambient=(0.02, 0.02, 0.028), zenith=(0.01, 0.012, 0.03),
                           horizon=(0.06, 0.045, 0.04), cloud_colour=(0.07, 0.05, 0.045)),
         sensor=SensorConfig(key=0.07, max_gain=4.0, awb=0.3, read_noise=0.01, shot_noise=0.025, blur=0.8,
                             motion_blur=4.0, vignetting=0.3, bloom=0.2, glare=0.7),
         depth=DepthConfig(noise=(0.003, 0.003), holes=2.0, edge_dropout=0.5)),
    Task("new_objects",
         "Daylight like daylight_campus, but traffic and objects it rarely shows: buses, trucks, riders, "
         "motorcycles, bicycles, belts, hydrants, CCTV cameras.",
         scene=SceneConfig(rates=Rates(moving_car=0.2, truck=0.25, bus=0.2, motorcycle=0.3, rider=0.4, bicycle=0.6,
                                       belt=0.15, hydrant=0.3, cctv=0.3, parked_car=0.6))),
]}


def list_tasks() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None


def _task_code(name: str) -> int:
    return zlib.crc32(name.encode())


@lru_cache(maxsize=4)
def _street(task_name: str, seed: int, street: int) -> tuple[Street, Lighting]:
    task = get_task(task_name)
    key = (seed, _task_code(task_name), street)
    return Street(task.scene, task.walk, key), task.light.sample(np.random.default_rng([*key, 9]))


def render(task: str, index: int, seed: int = 0, height: int = 480, width: int = 640,
           instances: bool = False) -> Frame:
    """Frame `index` of task `task` for `seed`, rendered natively at height x width; with
    `instances`, also its object instance map (from the z-buffer, before any sensor effect)."""
    t = get_task(task)
    street, lighting = _street(task, seed, index // t.walk.frames_per_street)
    pose, prims, lights = street.view(index % t.walk.frames_per_street)
    intr = Intrinsics.for_size(height, width)
    rays = Rays(intr, pose)
    casting = cast(prims, rays, pose, intr)
    view = shade(casting, pose, intr, lighting, lights)
    rng = np.random.default_rng([seed, _task_code(task), index, 3])
    rgb = expose(view.radiance, view.depth, lights, pose, intr, t.sensor, rng)
    depth = measure_depth(view.depth, t.depth, rng)
    inst = instance_map(casting.prim, view.labels, casting.primitives) if instances else None
    return Frame(rgb, depth, view.labels, intr, pose.matrix(), inst)

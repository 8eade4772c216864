"""campus_sim: determinism, labels, depth geometry, class coverage, domain shift, files, CLI."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from campus_sim import Cls, generate, list_tasks, render
from campus_sim import tasks as tasks_mod
from campus_sim.camera import Intrinsics, Pose, Rays, rotation
from campus_sim.materials import Layout, Region
from campus_sim.raycast import GroundPlane, cast
from campus_sim.sensor import DepthConfig, measure_depth
from campus_sim.textures import Tex
from campus_sim.writer import split_seed

H, W = 120, 160
SEED = 7
# Frames from different streets (40 frames per street) and two points on each walk.
SAMPLE = [0, 20, 40, 60, 80, 100, 120, 140]


@pytest.fixture(scope="module")
def frames() -> dict[str, list]:
    return {t: [render(t, i, SEED, H, W) for i in SAMPLE] for t in ("daylight_campus", "dim_underpass")}


def test_class_ids_match_the_model_class_file():
    from rfnet.classes import load_class_list
    names = load_class_list().names
    assert [c.name.lower().replace("_", " ") for c in Cls] == [n.lower() for n in names]


def test_render_is_deterministic_and_seeded():
    a = render("dim_underpass", 5, 3, H, W)
    tasks_mod._street.cache_clear()          # rebuilt from scratch, not served from the cache
    b = render("dim_underpass", 5, 3, H, W)
    for x, y in ((a.rgb, b.rgb), (a.depth_m, b.depth_m), (a.labels, b.labels)):
        assert x.tobytes() == y.tobytes()
    c = render("dim_underpass", 5, 4, H, W)
    assert c.rgb.tobytes() != a.rgb.tobytes() and c.labels.tobytes() != a.labels.tobytes()


def test_frame_types_and_label_range(frames):
    for f in frames["daylight_campus"][:2] + frames["dim_underpass"][:2]:
        assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8
        assert f.depth_m.shape == (H, W) and f.depth_m.dtype == np.float32
        assert f.labels.shape == (H, W) and f.labels.dtype == np.uint8
        assert np.all((f.labels < 30) | (f.labels == 255))
        assert f.pose.shape == (4, 4)


def test_sky_is_exactly_where_nothing_returns(frames):
    for task, fs in frames.items():
        for f in fs:
            sky = f.labels == Cls.SKY
            assert np.all(f.depth_m[sky] == 0), task                 # the sky never returns depth
            valid = f.depth_m > 0
            assert not np.any(valid & sky)
            # The ground ahead of a robot looking down is mostly within range: what is
            # missing there are dropout holes and depth edges.
            low = ~sky[H // 2:]
            assert valid[H // 2:][low].mean() > 0.75, task
            assert 0.2 <= f.depth_m[valid].min() and f.depth_m.max() <= 20.0


def test_level_camera_sees_the_ground_at_h_f_over_v_minus_cy():
    intr = Intrinsics.for_size(H, W)
    h = 0.5
    pose = Pose(np.array([0.0, 0.0, h]), rotation(0.0, 0.0, 0.0))
    ground = GroundPlane(Layout(Region(Cls.ROAD, Tex("asphalt", (90, 90, 90)))))
    t = cast([ground], Rays(intr, pose), pose, intr).t
    v = np.arange(H, dtype=np.float64)[:, None]
    below = np.broadcast_to(v > intr.cy, (H, W))
    expected = h * intr.fy / (v - intr.cy)
    np.testing.assert_allclose(t[below], np.broadcast_to(expected, (H, W))[below], rtol=1e-5)
    assert np.all(np.isinf(t[~below]))                             # above the horizon: no hit
    cfg = DepthConfig(holes=0.0, edge_dropout=0.0)
    measured = measure_depth(np.where(np.isfinite(t), t, 0).astype(np.float32), cfg, np.random.default_rng(0))
    ok = measured > 0
    z = np.broadcast_to(expected, (H, W))[ok]
    assert np.all(np.abs(measured[ok] - z) <= 5 * (cfg.noise[0] + cfg.noise[1] * z ** 2))
    assert ok[below].mean() > 0.5                                  # within 20 m: the lower rows


def test_road_depth_matches_the_plane_under_the_camera(frames):
    """Road pixels lie on z = 0: their depth follows from the frame's pose and intrinsics."""
    cfg = DepthConfig()
    for f in frames["daylight_campus"]:
        intr = f.intrinsics
        vv, uu = np.mgrid[0:H, 0:W]
        rays = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones((H, W))], -1) @ f.pose[:3, :3].T
        road = (f.labels == Cls.ROAD) & (f.depth_m > 0)
        expected = -f.pose[2, 3] / rays[..., 2][road]
        err = np.abs(f.depth_m[road] - expected)
        assert np.all(err <= 5 * (cfg.noise[0] + cfg.noise[1] * expected ** 2) + 1e-3)


@pytest.mark.parametrize("task, required", [
    ("daylight_campus", {"road", "sidewalk", "building", "sky", "curb", "vegetation", "terrain", "person", "car",
                         "pole", "door", "traffic_sign", "stair", "flowerbed", "dustbin", "bicycle"}),
    ("dim_underpass", {"road", "sidewalk", "building", "wall", "sky", "curb", "vegetation", "person", "car", "pole",
                       "dustbin", "manhole", "hydrant", "cctv_camera"}),
])
def test_class_coverage(frames, task, required):
    seen = set()
    for f in frames[task]:
        seen |= {Cls(c).name.lower() for c in np.unique(f.labels) if c < 30}
    assert required <= seen, required - seen


def test_tasks_share_geometry_but_not_appearance(frames):
    day, dim = frames["daylight_campus"], frames["dim_underpass"]
    shared = {Cls.ROAD, Cls.SIDEWALK, Cls.BUILDING, Cls.CURB, Cls.SKY, Cls.VEGETATION}
    for fs in (day, dim):
        assert shared <= set(np.unique(np.concatenate([f.labels.ravel() for f in fs])).tolist())

    def brightness(fs):
        return np.mean([f.rgb.mean() for f in fs])

    def cast(fs):          # how far the average colour is from grey
        return np.mean([np.ptp(f.rgb.reshape(-1, 3).mean(0)) / f.rgb.mean() for f in fs])

    def grain(fs):         # pixel noise relative to brightness (Laplacian of flat-ish images)
        return np.mean([cv2.Laplacian(f.rgb.mean(2).astype(np.float32), cv2.CV_32F).std() / f.rgb.mean() for f in fs])

    assert brightness(dim) < 0.7 * brightness(day)
    assert cast(dim) > 1.5 * cast(day)
    assert grain(dim) > grain(day)


def test_consecutive_frames_are_steps_of_one_walk():
    a, b = render("daylight_campus", 10, 1, 24, 32), render("daylight_campus", 11, 1, 24, 32)
    step = np.linalg.norm(b.pose[:3, 3] - a.pose[:3, 3])
    assert 0.4 < step < 1.0
    assert 0.35 < a.pose[2, 3] < 0.8                           # a dog's camera height over the ground


def test_generate_writes_pngs_index_and_camera(tmp_path):
    index = generate(tmp_path, "daylight_campus", 3, seed=2, height=48, width=64, split="val", progress=False)
    assert index == tmp_path / "daylight_campus" / "val.txt"
    lines = index.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        paths = line.split(" ")
        assert [p.split("/")[0] for p in paths] == ["rgb", "depth", "label"]
        assert all((index.parent / p).is_file() for p in paths)
    rgb_p, depth_p, label_p = (index.parent / p for p in lines[1].split(" "))
    frame = render("daylight_campus", 1, split_seed(2, "val"), 48, 64)
    depth = cv2.imread(str(depth_p), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, np.round(frame.depth_m * 1000).astype(np.uint16))
    np.testing.assert_array_equal(cv2.imread(str(label_p), cv2.IMREAD_UNCHANGED), frame.labels)
    np.testing.assert_array_equal(cv2.imread(str(rgb_p))[..., ::-1], frame.rgb)
    cam = yaml.safe_load((index.parent / "camera.yaml").read_text())
    assert cam["width"] == 64 and cam["height"] == 48 and cam["depth_scale_mm"] == 1
    assert cam["fx"] == pytest.approx(frame.intrinsics.fx) and cam["cy"] == pytest.approx(frame.intrinsics.cy)


def test_train_split_renders_the_seed_and_other_splits_differ():
    assert split_seed(5, "train") == 5
    assert len({split_seed(5, s) for s in ("train", "val", "test")}) == 3


def test_cli_lists_tasks_and_writes_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "campus_sim", "--list-tasks"], capture_output=True, text=True, check=True)
    assert all(t in out.stdout for t in list_tasks()) and {"daylight_campus", "dim_underpass"} <= set(list_tasks())
    subprocess.run([sys.executable, "-m", "campus_sim", "--out", str(tmp_path), "--task", "dim_underpass", "--count", "2",
                    "--seed", "1", "--height", "32", "--width", "48"], capture_output=True, check=True)
    lines = (tmp_path / "dim_underpass" / "train.txt").read_text().splitlines()
    assert len(lines) == 2 and all((tmp_path / "dim_underpass" / p).is_file() for p in lines[0].split())
    bad = subprocess.run([sys.executable, "-m", "campus_sim", "--out", str(tmp_path), "--task", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown task" in bad.stderr


# ---------------------------------------------------------------------------------------
# Ground-truth instances (campus_sim.instances), the SAM stand-in's raw material
# ---------------------------------------------------------------------------------------
def test_instances_are_one_class_each_and_split_objects_of_one_class():
    f = render("daylight_campus", 20, SEED, H, W, instances=True)
    assert f.instances.shape == (H, W) and f.instances.dtype == np.int32
    ids = np.unique(f.instances)
    assert ids[0] == 0 and ids[-1] == len(ids) - 1          # dense numbering
    for i in ids:
        assert len(np.unique(f.labels[f.instances == i])) == 1, "an instance spans two classes"
    # More instances than classes: objects of one class (buildings, trees, cars) are apart.
    assert len(ids) > len(np.unique(f.labels))
    # Same frame without instances: identical pixels, no instance map.
    g = render("daylight_campus", 20, SEED, H, W)
    assert g.instances is None and g.rgb.tobytes() == f.rgb.tobytes()


def test_touching_primitives_of_one_class_are_one_object_and_apart_ones_are_two():
    from campus_sim.instances import instance_map
    from campus_sim.materials import Surface
    from campus_sim.raycast import Block

    cam = Intrinsics.for_size(H, W)
    pose = Pose(np.array([0.0, 0.0, 1.0]), rotation(0.0, 0.0, 0.0))
    mat = Surface(Cls.CAR, Tex("smooth", (200, 0, 0)))
    ground = GroundPlane(Layout(Region(Cls.ROAD, Tex("smooth", (90, 90, 90)))))
    # Two blocks stacked into one car, and a third car 3 m to the side.
    prims = [ground, Block((10.0, 0.0, 0.5), (1.0, 1.0, 0.5), mat), Block((10.0, 0.0, 1.25), (0.8, 0.8, 0.25), mat),
             Block((10.0, 3.0, 0.5), (1.0, 1.0, 0.5), mat)]
    c = cast(prims, Rays(cam, pose), pose, cam)
    labels = np.where(c.prim > 0, Cls.CAR, np.where(c.prim == 0, Cls.ROAD, Cls.SKY)).astype(np.uint8)
    inst = instance_map(c.prim, labels, prims)
    one = np.unique(inst[(c.prim == 1) | (c.prim == 2)])
    other = np.unique(inst[c.prim == 3])
    assert len(one) == 1 and len(other) == 1 and one[0] != other[0]


def test_instance_maps_are_written_only_when_asked(tmp_path):
    from campus_sim.writer import instance_path, read_instances

    index = generate(tmp_path, "dim_underpass", 2, SEED, H, W, "test", progress=False, instances=True)
    line = index.read_text().splitlines()[1].split()
    assert len(line) == 3                                   # the index format is unchanged
    inst = read_instances(instance_path(index, line[-1]))
    assert inst.shape == (H, W) and inst.max() > 0
    plain = generate(tmp_path / "plain", "dim_underpass", 1, SEED, H, W, "test", progress=False)
    assert not (plain.parent / "instance").exists()

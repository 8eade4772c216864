"""Builders for the objects along a street: people, vehicles, vegetation, street furniture.

Each returns a list of primitives standing on the surface at height `zb`. Sizes and
colours are drawn from `rng`; shapes are a few primitives each, enough for a 480 x 640
camera at street distances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import Cls
from .materials import Glazed, Sign, Surface
from .raycast import Block, Cylinder, Ellipsoid
from .textures import Tex

CAR_PAINTS = [(225, 225, 222), (172, 174, 178), (32, 32, 35), (98, 100, 106), (150, 28, 26),
              (32, 52, 118), (40, 70, 50), (190, 175, 140), (200, 200, 60)]
CLOTHES = [(30, 30, 35), (60, 60, 70), (200, 200, 195), (150, 30, 35), (40, 60, 130), (90, 110, 60),
           (200, 140, 60), (120, 80, 140), (180, 160, 130), (70, 50, 40), (230, 210, 60)]
TROUSERS = [(30, 30, 40), (45, 55, 90), (70, 70, 75), (110, 95, 75), (20, 20, 22)]
SKIN = [(235, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45)]
BIN_COLOURS = [(40, 110, 60), (110, 112, 110), (40, 70, 140), (200, 110, 30), (90, 70, 50), (35, 35, 38)]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _smooth(rng, colour, jitter: float = 0.08) -> Tex:
    c = np.clip(np.asarray(colour, float) * rng.uniform(1 - jitter, 1 + jitter, 3), 0, 255)
    return Tex("smooth", tuple(c), offset=float(rng.uniform(0, 100)))


def person(x: float, y: float, zb: float, rng, label: int = Cls.PERSON, seated: bool = False) -> list:
    s = rng.uniform(0.85, 1.1) if not seated else 1.0
    heading = rng.uniform(0, 2 * np.pi)
    ax, ay = -np.sin(heading), np.cos(heading)      # shoulder axis
    shirt = Surface(label, _smooth(rng, _pick(rng, CLOTHES), 0.15))
    legs = Surface(label, _smooth(rng, _pick(rng, TROUSERS)))
    skin = Surface(label, _smooth(rng, _pick(rng, SKIN), 0.05))
    hip = zb + (0.1 if seated else 0.85 * s)
    feet = hip - 0.6 if seated else zb        # a rider's feet hang to the pedals
    parts = [Cylinder((x + side * 0.09 * s * ax, y + side * 0.09 * s * ay), 0.075 * s, feet, hip, legs) for side in (-1, 1)]
    parts.append(Ellipsoid((x, y, hip + 0.33 * s), (0.18 * s, 0.18 * s, 0.36 * s), shirt))
    for side in (-1, 1):
        parts.append(Cylinder((x + side * 0.23 * s * ax, y + side * 0.23 * s * ay), 0.05 * s, hip - 0.05 * s, hip + 0.58 * s, shirt))
    parts.append(Ellipsoid((x, y, hip + 0.8 * s), (0.1 * s, 0.1 * s, 0.12 * s), skin))
    return parts


@dataclass(frozen=True)
class WheelAlpha:
    """Rim, tyre and two spokes of a bicycle wheel in a thin box's (x, z) plane."""
    radius: float

    def __call__(self, lp: np.ndarray, face: np.ndarray) -> np.ndarray:
        r = np.hypot(lp[..., 0], lp[..., 2])
        spoke = (np.abs(lp[..., 0]) < 0.012) | (np.abs(lp[..., 2]) < 0.012) | (r < 0.05)
        return (r <= self.radius) & ((r > self.radius - 0.05) | spoke)


def bicycle(x: float, y: float, zb: float, yaw: float, rng, label: int = Cls.BICYCLE) -> list:
    paint = Surface(label, _smooth(rng, _pick(rng, CAR_PAINTS + CLOTHES)))
    tyre = Surface(label, Tex("smooth", (25, 25, 25)))
    c, s = np.cos(yaw), np.sin(yaw)
    r = 0.34

    def at(along: float, z: float, half, mat, alpha=None):
        return Block((x + c * along, y + s * along, zb + z), half, mat, yaw=yaw, alpha=alpha, cast_shadow=False)
    return [at(-0.52, r, (r, 0.015, r), tyre, WheelAlpha(r)), at(0.52, r, (r, 0.015, r), tyre, WheelAlpha(r)),
            at(0.0, 0.74, (0.34, 0.02, 0.02), paint), at(-0.16, 0.58, (0.02, 0.02, 0.26), paint),
            at(0.16, 0.5, (0.3, 0.02, 0.02), paint), at(0.44, 0.74, (0.02, 0.02, 0.24), paint),
            at(0.44, 0.98, (0.02, 0.26, 0.02), paint), at(-0.2, 0.87, (0.12, 0.06, 0.03), tyre)]


def motorcycle(x: float, y: float, zb: float, yaw: float, rng) -> list:
    paint = Surface(Cls.MOTORCYCLE, _smooth(rng, _pick(rng, CAR_PAINTS)), reflect=0.05)
    tyre = Surface(Cls.MOTORCYCLE, Tex("smooth", (25, 25, 25)))
    c, s = np.cos(yaw), np.sin(yaw)
    wheel = (0.3, 0.07, 0.3) if abs(c) > 0.5 else (0.07, 0.3, 0.3)
    parts = [Ellipsoid((x + c * k, y + s * k, zb + 0.3), wheel, tyre) for k in (-0.7, 0.7)]
    parts.append(Block((x, y, zb + 0.7), (0.65, 0.18, 0.25), paint, yaw=yaw))
    parts.append(Block((x + c * 0.6, y + s * 0.6, zb + 1.0), (0.04, 0.35, 0.03), tyre, yaw=yaw))
    return parts


def _wheels(x, y, zb, yaw, length, width, radius, mat) -> list:
    c, s = np.cos(yaw), np.sin(yaw)
    along_x = abs(c) > 0.5
    radii = (radius, 0.12, radius) if along_x else (0.12, radius, radius)
    out = []
    for a in (-1, 1):
        for b in (-1, 1):
            da, db = a * (length / 2 - 0.85), b * (width / 2 - 0.08)
            out.append(Ellipsoid((x + c * da - s * db, y + s * da + c * db, zb + radius), radii, mat))
    return out


def car(x: float, y: float, zb: float, yaw: float, rng, night: bool = False) -> list:
    length, width = rng.uniform(4.0, 4.9), rng.uniform(1.72, 1.9)
    paint = _smooth(rng, _pick(rng, CAR_PAINTS), 0.05)
    body = Block((x, y, zb + 0.62), (length / 2, width / 2, 0.36), Surface(Cls.CAR, paint, reflect=0.08), yaw=yaw)
    h = 0.25
    cabin_len = length * rng.uniform(0.26, 0.32)
    back = -length * 0.06
    cuts = (((1.0, 0.0, 0.8), 0.8 * h + cabin_len - 0.45), ((-1.0, 0.0, 0.9), 0.9 * h + cabin_len - 0.25))
    c, s = np.cos(yaw), np.sin(yaw)
    cabin = Block((x + c * back, y + s * back, zb + 0.98 + h), (cabin_len, width / 2 - 0.06, h),
                  Glazed(Cls.CAR, paint, sill=zb + 1.0, head=zb + 0.96 + 2 * h - 0.04), yaw=yaw, cuts=cuts)
    parts = [body, cabin] + _wheels(x, y, zb, yaw, length, width, 0.32, Surface(Cls.CAR, Tex("smooth", (22, 22, 24))))
    for end, colour, power in ((1, (255, 250, 235), 40.0), (-1, (200, 20, 20), 6.0)):
        for b in (-1, 1):
            da, db = end * (length / 2 + 0.005), b * (width / 2 - 0.25)
            emit = tuple(np.asarray(colour) / 255 * power) if night else None
            parts.append(Block((x + c * da - s * db, y + s * da + c * db, zb + 0.78), (0.01, 0.12, 0.05),
                               Surface(Cls.CAR, Tex("smooth", colour), emit=emit, emit_dir=(end * c, end * s, 0.0)),
                               yaw=yaw, cast_shadow=False))
    return parts


def truck(x: float, y: float, zb: float, yaw: float, rng) -> list:
    c, s = np.cos(yaw), np.sin(yaw)
    box_len = rng.uniform(4.5, 7.0)
    paint = _smooth(rng, _pick(rng, CAR_PAINTS))
    cab = Block((x + c * (box_len / 2 + 1.0), y + s * (box_len / 2 + 1.0), zb + 1.5), (1.0, 1.2, 1.2),
                Glazed(Cls.TRUCK, paint, sill=zb + 1.7, head=zb + 2.5), yaw=yaw)
    cargo = Block((x, y, zb + 2.0), (box_len / 2, 1.25, 1.6),
                  Surface(Cls.TRUCK, _smooth(rng, _pick(rng, [(230, 230, 228), (180, 180, 175), (60, 80, 120)]))), yaw=yaw)
    return [cab, cargo] + _wheels(x + c * 0.8, y + s * 0.8, zb, yaw, box_len + 2, 2.4, 0.5,
                                  Surface(Cls.TRUCK, Tex("smooth", (22, 22, 24))))


def bus(x: float, y: float, zb: float, yaw: float, rng) -> list:
    paint = _smooth(rng, _pick(rng, [(200, 40, 30), (230, 230, 225), (40, 90, 160), (240, 180, 40)]))
    length = rng.uniform(10.0, 12.0)
    body = Block((x, y, zb + 1.75), (length / 2, 1.25, 1.45), Glazed(Cls.BUS, paint, sill=zb + 1.3, head=zb + 2.7), yaw=yaw)
    return [body] + _wheels(x, y, zb, yaw, length, 2.5, 0.5, Surface(Cls.BUS, Tex("smooth", (22, 22, 24))))


def tree(x: float, y: float, zb: float, rng, foliage: Tex) -> list:
    trunk_h = rng.uniform(2.0, 3.6)
    radius = rng.uniform(1.3, 2.6)
    leaves = Surface(Cls.VEGETATION, Tex(foliage.kind, foliage.colour, foliage.colour2, offset=float(rng.uniform(0, 100))))
    bark = Surface(Cls.VEGETATION, Tex("bark", (85, 70, 55), offset=float(rng.uniform(0, 100))))
    parts = [Cylinder((x, y), rng.uniform(0.1, 0.2), zb, zb + trunk_h + radius * 0.5, bark)]
    top = zb + trunk_h + radius * 0.9
    parts.append(Ellipsoid((x, y, top), (radius, radius, radius * rng.uniform(0.8, 1.3)), leaves))
    for _ in range(int(rng.integers(1, 4))):
        off = rng.normal(0, radius * 0.45, 3)
        r = radius * rng.uniform(0.5, 0.8)
        parts.append(Ellipsoid((x + off[0], y + off[1], top + abs(off[2])), (r, r, r), leaves))
    return parts


def bush(x: float, y: float, zb: float, rng, foliage: Tex) -> list:
    leaves = Surface(Cls.VEGETATION, Tex(foliage.kind, foliage.colour, foliage.colour2, offset=float(rng.uniform(0, 100))))
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.35, 0.8)
        off = rng.normal(0, 0.4, 2)
        parts.append(Ellipsoid((x + off[0], y + off[1], zb + r * 0.5), (r, r, r * rng.uniform(0.7, 1.0)), leaves))
    return parts


def lamp_post(x: float, y: float, zb: float, toward_road: float, rng, emit) -> tuple[list, np.ndarray]:
    """A street lamp; returns its primitives and the light's position (under the head)."""
    height = rng.uniform(4.5, 7.0)
    metal = Surface(Cls.POLE, _smooth(rng, (95, 98, 100)))
    hy = y + toward_road * 1.0
    head = Surface(Cls.POLE, Tex("smooth", (230, 225, 210)) if emit else _smooth(rng, (80, 82, 85)), emit=emit)
    parts = [Cylinder((x, y), 0.07, zb, zb + height, metal),
             Block((x, (y + hy) / 2, zb + height - 0.05), (0.04, 0.5, 0.04), metal, cast_shadow=False),
             Block((x, hy, zb + height - 0.1), (0.3, 0.16, 0.07), head)]
    return parts, np.array([x, hy, zb + height - 0.25])


@dataclass(frozen=True)
class PlateAlpha:
    """Cuts a sign plate (thin along `thin_axis`) to a disc or a triangle."""
    shape: str
    half: tuple[float, float]
    thin_axis: int

    def __call__(self, lp: np.ndarray, face: np.ndarray) -> np.ndarray:
        a = lp[..., 1 - self.thin_axis] / self.half[0]
        b = lp[..., 2] / self.half[1]
        if self.shape == "disc":
            return a * a + b * b <= 1.0
        return np.abs(a) <= (1.0 - b) / 2            # point up: full width at the bottom


SIGN_STYLES = [("disc", (235, 235, 235), (200, 25, 25)), ("disc", (30, 80, 170), (235, 235, 235)),
               ("triangle", (235, 235, 235), (200, 25, 25)), ("rect", (30, 80, 170), (235, 235, 235)),
               ("rect", (30, 120, 70), (235, 235, 235)), ("rect", (240, 200, 30), (30, 30, 30))]


def sign_post(x: float, y: float, zb: float, facing: tuple[float, float, float], rng) -> list:
    shape, face, border = _pick(rng, SIGN_STYLES)
    height = rng.uniform(2.1, 2.8)
    half = (0.3, 0.3) if shape != "rect" else (rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.4))
    thin = 0 if abs(facing[0]) > 0.5 else 1
    size = [half[0], half[0], half[1]]
    size[thin] = 0.02
    alpha = PlateAlpha(shape, half, thin) if shape != "rect" else None
    plate = Block((x + facing[0] * 0.05, y + facing[1] * 0.05, zb + height), tuple(size),
                  Sign(face, border, half, facing, round=shape == "disc"), alpha=alpha, cast_shadow=False)
    return [Cylinder((x, y), 0.035, zb, zb + height + half[1] * 0.5, Surface(Cls.POLE, _smooth(rng, (150, 152, 155)))), plate]


def traffic_light(x: float, y: float, zb: float, facing: tuple[float, float, float], rng, bright: float) -> list:
    height = rng.uniform(2.6, 3.2)
    thin = 0 if abs(facing[0]) > 0.5 else 1
    half = [0.16, 0.16, 0.45]
    housing = Block((x + facing[0] * 0.2, y + facing[1] * 0.2, zb + height + 0.45), tuple(half),
                    Surface(Cls.TRAFFIC_LIGHT, Tex("smooth", (35, 35, 35))))
    lit = int(rng.integers(3))
    lenses = []
    for k, colour in enumerate([(230, 30, 20), (240, 170, 20), (30, 220, 90)]):
        on = k == lit
        size = [0.09, 0.09, 0.09]
        size[thin] = 0.01
        emit = tuple(np.asarray(colour) / 255 * bright) if on else None
        lenses.append(Block((x + facing[0] * 0.37, y + facing[1] * 0.37, zb + height + 0.75 - 0.3 * k), tuple(size),
                            Surface(Cls.TRAFFIC_LIGHT, Tex("smooth", colour if on else (50, 50, 50)), emit=emit,
                                    emit_dir=facing), cast_shadow=False))
    return [Cylinder((x, y), 0.08, zb, zb + height + 0.9, Surface(Cls.POLE, _smooth(rng, (110, 112, 115)))), housing] + lenses


def dustbin(x: float, y: float, zb: float, rng) -> list:
    colour = _pick(rng, BIN_COLOURS)
    mat = Surface(Cls.DUSTBIN, _smooth(rng, colour), top=Tex("smooth", tuple(np.asarray(colour) * 0.5)))
    if rng.random() < 0.5:
        return [Cylinder((x, y), rng.uniform(0.25, 0.32), zb, zb + rng.uniform(0.85, 1.05), mat)]
    h = rng.uniform(0.8, 1.1)
    return [Block((x, y, zb + h / 2), (rng.uniform(0.22, 0.32), rng.uniform(0.22, 0.32), h / 2), mat)]


def hydrant(x: float, y: float, zb: float, rng) -> list:
    mat = Surface(Cls.HYDRANT, _smooth(rng, _pick(rng, [(190, 30, 25), (220, 180, 30), (200, 60, 30)])))
    h = rng.uniform(0.55, 0.75)
    return [Cylinder((x, y), 0.11, zb, zb + h, mat), Ellipsoid((x, y, zb + h), (0.12, 0.12, 0.09), mat),
            Block((x, y, zb + h * 0.7), (0.07, 0.2, 0.05), mat, cast_shadow=False)]


def cctv(x: float, y: float, z: float, outward: tuple[float, float], rng) -> list:
    """A bullet camera on a bracket, fixed to a wall at (x, y) and pointing `outward`."""
    mat = Surface(Cls.CCTV_CAMERA, _smooth(rng, _pick(rng, [(225, 225, 222), (40, 40, 42), (150, 150, 150)])))
    ox, oy = outward
    arm = Block((x + ox * 0.15, y + oy * 0.15, z), (0.15 * abs(ox) + 0.03, 0.15 * abs(oy) + 0.03, 0.03), mat, cast_shadow=False)
    body = Block((x + ox * 0.35, y + oy * 0.35, z - 0.05), (0.14 * abs(ox) + 0.06, 0.14 * abs(oy) + 0.06, 0.06), mat,
                 cast_shadow=False)
    return [arm, body]


def dome_camera(x: float, y: float, ceiling: float, rng) -> list:
    mat = Surface(Cls.CCTV_CAMERA, _smooth(rng, (215, 215, 212)))
    return [Ellipsoid((x, y, ceiling), (0.14, 0.14, 0.12), mat, cast_shadow=False)]


def belt_barrier(x: float, y: float, zb: float, along_x: bool, count: int, rng) -> list:
    """Queue stanchions joined by retractable belts (all labelled belt)."""
    post = Surface(Cls.BELT, _smooth(rng, (160, 160, 165)))
    band = Surface(Cls.BELT, _smooth(rng, _pick(rng, [(190, 30, 30), (30, 60, 150), (220, 190, 30), (25, 25, 25)])))
    gap = rng.uniform(1.2, 2.0)
    parts = []
    for k in range(count):
        px, py = (x + k * gap, y) if along_x else (x, y + k * gap)
        parts.append(Cylinder((px, py), 0.03, zb, zb + 0.95, post, cast_shadow=False))
        if k:
            cx, cy = (px - gap / 2, py) if along_x else (px, py - gap / 2)
            half = (gap / 2, 0.004, 0.025) if along_x else (0.004, gap / 2, 0.025)
            parts.append(Block((cx, cy, zb + 0.9), half, band, cast_shadow=False))
    return parts


def flowerbed(x: float, y: float, zb: float, half: tuple[float, float], rng, border: Tex) -> list:
    h = rng.uniform(0.2, 0.45)
    flowers = _pick(rng, [(220, 60, 90), (240, 210, 60), (240, 240, 235), (180, 70, 200), (230, 110, 40)])
    top = Tex("flowers", (80, 60, 45), flowers, offset=float(rng.uniform(0, 100)))
    return [Block((x, y, zb + h / 2), (half[0], half[1], h / 2), Surface(Cls.FLOWERBED, border, top=top))]

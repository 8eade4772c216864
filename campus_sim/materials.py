"""Materials: what a hit primitive looks like and which class it is.

A material maps a `Hit` to a `Paint` (label, albedo, reflectance, emission). Most
are one class with a texture; facades and ground layouts label sub-regions (doors,
manholes, paths) from the hit's facade or plan coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import Cls
from .raycast import Hit, Paint
from .textures import Tex, cell_random, noise, srgb_to_linear

UP = 0.7            # |normal z| above this is a top (or bottom) face


def _emit_where(mask: np.ndarray, colour) -> np.ndarray | None:
    if colour is None or not mask.any():
        return None
    return np.where(mask[:, None], np.asarray(colour, np.float32)[None, :], np.float32(0))


@dataclass(frozen=True)
class Surface:
    """One class, one texture; optionally another on top faces (lids, roofs, copings), a
    mirror-like reflectance, and light sent out by faces facing `emit_dir` (lamps)."""
    label: int
    tex: Tex
    top: Tex | None = None
    reflect: float = 0.0
    emit: tuple[float, float, float] | None = None
    emit_dir: tuple[float, float, float] = (0.0, 0.0, -1.0)

    def __call__(self, hit: Hit) -> Paint:
        albedo = self.tex(hit.uv, hit.fp)
        if self.top is not None:
            up = hit.normal[:, 2] > UP
            if up.any():
                albedo[up] = self.top(hit.uv[up], hit.fp[up])
        emit = None
        if self.emit is not None:
            emit = _emit_where(hit.normal @ np.float32(self.emit_dir) > UP, self.emit)
        return Paint(self.label, albedo, self.reflect, emit)


@dataclass(frozen=True)
class Windows:
    """A grid of windows per floor on every side face of a building."""
    pitch: float            # horizontal spacing (m)
    width: float
    sill: float             # above each floor
    height: float
    floor: float            # floor-to-floor height
    base: float             # world z of the ground floor
    top: float              # world z of the roof
    frame: Tex
    lit: float = 0.0        # fraction of windows with the lights on (night)
    lit_colour: tuple[float, float, float] = (0.3, 0.22, 0.13)


@dataclass(frozen=True)
class Door:
    face: int               # Block face index (2: -y, 3: +y)
    u0: float               # facade coordinates: along the face (m) and world height
    u1: float
    z0: float
    z1: float
    tex: Tex
    reflect: float = 0.0    # glass doors


@dataclass(frozen=True)
class Facade:
    """Building or wall sides: wall texture, windows (or a glass curtain wall) and doors.

    Glass shows a dark interior plus `glass_reflect` of the sky in its mirror direction;
    a curtain wall reflects so much that it looks like the sky while being labelled
    building, a deliberately hard case."""
    label: int
    wall: Tex
    roof: Tex
    half_len: tuple[float, float]     # half lengths of the faces normal to x and to y
    windows: Windows | None = None
    doors: tuple[Door, ...] = ()
    curtain_wall: bool = False
    glass_tint: tuple[float, float, float] = (40, 48, 58)
    glass_reflect: float = 0.35

    def __call__(self, hit: Hit) -> Paint:
        n = len(hit.face)
        albedo = np.empty((n, 3), np.float32)
        label = np.full(n, self.label, np.uint8)
        reflect = np.zeros(n, np.float32)
        emit = None
        top = np.abs(hit.normal[:, 2]) > UP
        if top.any():
            albedo[top] = self.roof(hit.uv[top], hit.fp[top])
        side = ~top
        if side.any():
            a, e = self._side(hit.uv[side], hit.face[side], hit.fp[side])
            albedo[side], reflect[side] = a, e[0]
            if e[1] is not None:
                emit = np.zeros((n, 3), np.float32)
                emit[side] = e[1]
        for door in self.doors:
            u, z = hit.uv[:, 0], hit.uv[:, 1]
            m = side & (hit.face == door.face) & (u >= door.u0) & (u <= door.u1) & (z >= door.z0) & (z <= door.z1)
            if m.any():
                label[m] = Cls.DOOR
                albedo[m] = door.tex(hit.uv[m], hit.fp[m])
                reflect[m] = door.reflect
                _door_frame(albedo, m, u, z, door)
                if emit is not None:
                    emit[m] = 0
        return Paint(label, albedo, reflect, emit)

    def _side(self, uv: np.ndarray, face: np.ndarray, fp: np.ndarray):
        u, z = uv[:, 0], uv[:, 1]
        length = np.where(face < 2, self.half_len[0], self.half_len[1]) * 2
        a = u + length / 2                      # metres from the face's left edge
        albedo = self.wall(uv, fp)
        reflect = np.zeros(len(u), np.float32)
        glass_alb = srgb_to_linear(self.glass_tint)[None, :] * (1 + 0.15 * noise(u, z, 1.0, 3.0))[:, None]
        if self.curtain_wall:
            # Mullions every 1.5 m and at each floor; panels between them are glass.
            mull = (np.abs(a % 1.5 - 0.75) > 0.7) | (np.abs(z % 3.6 - 1.8) > 1.72)
            albedo = np.where(mull[:, None], albedo, glass_alb)
            return albedo, (np.where(mull, 0.0, self.glass_reflect).astype(np.float32), None)
        w = self.windows
        if w is None:
            return albedo, (reflect, None)
        col, cu = np.floor(a / w.pitch), a % w.pitch
        floor = np.floor((z - w.base) / w.floor)
        fz = (z - w.base) - floor * w.floor
        inside = (np.abs(cu - w.pitch / 2) < w.width / 2) & (fz > w.sill) & (fz < w.sill + w.height)
        inside &= (a > 0.6) & (a < length - 0.6) & (floor >= 0)
        inside &= z < w.top - 0.6
        frame = inside & ((np.abs(cu - w.pitch / 2) > w.width / 2 - 0.06) | (fz < w.sill + 0.06) | (fz > w.sill + w.height - 0.06))
        glass = inside & ~frame
        albedo = np.where(frame[:, None], w.frame(uv, fp), albedo)
        albedo = np.where(glass[:, None], glass_alb, albedo)
        reflect = np.where(glass, self.glass_reflect, 0.0).astype(np.float32)
        emit = None
        if w.lit > 0:
            on = glass & (cell_random(col, floor, 5) < w.lit)
            emit = _emit_where(on, w.lit_colour)
            if emit is not None:
                reflect = np.where(on, 0.1, reflect).astype(np.float32)
        return albedo, (reflect, emit)


def _door_frame(albedo, m, u, z, door: Door) -> None:
    """A darker frame and a handle line, so a door reads as a door and not a dark window."""
    edge = m & ((u - door.u0 < 0.06) | (door.u1 - u < 0.06) | (door.z1 - z < 0.06))
    albedo[edge] *= 0.45
    mid = (door.u0 + door.u1) / 2
    split = m & (np.abs(u - mid) < 0.015)
    albedo[split] *= 0.5


@dataclass(frozen=True)
class Region:
    """A labelled part of a ground layout: a rectangle (x0, y0, x1, y1) or a disc (x, y, r)."""
    label: int
    tex: Tex
    rect: tuple[float, float, float, float] | None = None
    disc: tuple[float, float, float] | None = None
    wet: float = 0.0

    def x_span(self) -> tuple[float, float]:
        if self.rect is not None:
            return self.rect[0], self.rect[2]
        return self.disc[0] - self.disc[2], self.disc[0] + self.disc[2]

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        cx, cy, r = self.disc
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


@dataclass(frozen=True)
class Layout:
    """Plan-view labelling of a horizontal surface (the ground plane, a terrace top):
    later regions override earlier ones; `side` paints vertical faces. Wet regions get
    darker and mirror-like in puddles."""
    default: Region
    regions: tuple[Region, ...] = ()
    side: Surface | None = None

    def __call__(self, hit: Hit) -> Paint:
        n = len(hit.face)
        x, y = hit.p[:, 0], hit.p[:, 1]
        top = hit.normal[:, 2] > UP
        # Pixels sorted by x: each region (most are short: road markings, manholes)
        # tests only the pixels within its x span.
        tops = np.nonzero(top)[0]
        order = np.argsort(x[tops], kind="stable")
        xs, by_x = x[tops][order], tops[order]
        which = np.zeros(n, np.int64)
        for k, r in enumerate(self.regions, start=1):
            x0, x1 = r.x_span()
            cand = by_x[np.searchsorted(xs, x0, "left"):np.searchsorted(xs, x1, "right")]
            which[cand[r.contains(x[cand], y[cand])]] = k
        label = np.empty(n, np.uint8)
        albedo = np.empty((n, 3), np.float32)
        reflect = np.zeros(n, np.float32)
        every = (self.default,) + self.regions
        group = np.argsort(which[tops], kind="stable")
        ks, starts = np.unique(which[tops][group], return_index=True)
        for k, m in zip(ks, np.split(tops[group], starts[1:])):
            r = every[k]
            label[m] = r.label
            albedo[m] = r.tex(hit.uv[m], hit.fp[m])
            if r.wet > 0:
                puddle = np.clip(noise(x[m], y[m], 3.0, 11.0) * 0.8 + 0.4, 0, 1)
                albedo[m] *= (1 - 0.5 * puddle)[:, None]
                reflect[m] = r.wet * puddle
        if (~top).any():
            side = self.side(hit.subset(~top))
            label[~top] = side.label
            albedo[~top] = side.albedo
        return Paint(label, albedo, reflect)


@dataclass(frozen=True)
class Sign:
    """A sign plate: a coloured face with a border on the side facing `front`, grey metal behind."""
    face_colour: tuple[float, float, float]
    border_colour: tuple[float, float, float]
    half: tuple[float, float]          # half width (along the plate) and half height
    front: tuple[float, float, float]
    round: bool = False
    label: int = Cls.TRAFFIC_SIGN

    def __call__(self, hit: Hit) -> Paint:
        lp = hit.lp
        a = np.abs(lp[:, 1] if abs(self.front[0]) > 0.5 else lp[:, 0]) / self.half[0]
        b = np.abs(lp[:, 2]) / self.half[1]
        r = np.hypot(a, b) if self.round else np.maximum(a, b)
        albedo = np.where((r > 0.78)[:, None], srgb_to_linear(self.border_colour), srgb_to_linear(self.face_colour))
        back = hit.normal @ np.float32(self.front) < 0.5
        albedo = np.where(back[:, None], srgb_to_linear((120, 122, 125)), albedo).astype(np.float32)
        return Paint(self.label, albedo)


@dataclass(frozen=True)
class Glazed:
    """A vehicle cabin or bus body: paint, with a glass band between world heights sill and head."""
    label: int
    paint: Tex
    sill: float
    head: float
    glass: tuple[float, float, float] = (30, 34, 40)
    reflect: float = 0.3

    def __call__(self, hit: Hit) -> Paint:
        albedo = self.paint(hit.uv, hit.fp)
        glass = (hit.normal[:, 2] < UP) & (hit.p[:, 2] > self.sill) & (hit.p[:, 2] < self.head)
        albedo[glass] = srgb_to_linear(self.glass)
        return Paint(self.label, albedo, np.where(glass, self.reflect, 0.0).astype(np.float32))

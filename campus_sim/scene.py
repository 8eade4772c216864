"""Procedural campus streets: a layout built in chunks along x, and the robot's walk.

A street runs along +x: a road of half width `rh` around y = 0, curbs, then on each
side a raised terrace (sidewalk band, lawns, paths, plazas) carrying buildings,
walls, fences, trees and street furniture. Chunks of `chunk_length` metres are built
on demand from (seed, street, chunk), so consecutive frames see the same world and
any frame can be rendered on its own. A dataset walks one street for
`frames_per_street` frames, then starts a new street (new widths, materials, light).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import objects as obj
from .camera import Pose, rotation
from .classes import Cls
from .materials import Door, Facade, Layout, Region, Surface, Windows
from .raycast import Block, Cylinder, GroundPlane
from .textures import Tex

DEPTH = 60.0          # how far the terraces reach from the road (m)
BIG = 1e5
FRAME_DT = 0.5        # seconds between frames (a 1.2 m/s walk sampled every 0.6 m)

FACADES = [("bricks", (140, 70, 50), (190, 185, 175)), ("bricks", (120, 90, 65), (170, 165, 155)),
           ("bricks", (185, 160, 115), (210, 205, 195)), ("plaster", (215, 205, 180), (0, 0, 0)),
           ("plaster", (220, 220, 214), (0, 0, 0)), ("plaster", (170, 168, 160), (0, 0, 0)),
           ("plaster", (200, 170, 150), (0, 0, 0)), ("concrete", (150, 148, 140), (0, 0, 0)),
           ("concrete", (118, 118, 116), (0, 0, 0))]
DOORS = [((120, 80, 50), 0.0), ((90, 60, 40), 0.0), ((90, 95, 100), 0.0), ((40, 50, 60), 0.3), ((60, 80, 70), 0.0)]


@dataclass(frozen=True)
class Rates:
    """Expected objects per 10 m of one street side (of one lane for moving vehicles)."""
    person: float = 0.5
    parked_car: float = 1.0
    moving_car: float = 0.15
    truck: float = 0.02
    bus: float = 0.02
    motorcycle: float = 0.03
    rider: float = 0.03
    bicycle: float = 0.15
    tree: float = 0.8
    bush: float = 0.6
    flowerbed: float = 0.35
    sign: float = 0.3
    dustbin: float = 0.2
    hydrant: float = 0.06
    cctv: float = 0.06
    belt: float = 0.03
    manhole: float = 0.2


@dataclass(frozen=True)
class SceneConfig:
    rates: Rates = field(default_factory=Rates)
    crossing: float = 0.35                 # chance a chunk has a side street
    underpass: float = 0.0                 # chance a chunk passes under a bridge
    frontage: tuple[float, float, float, float] = (0.55, 0.15, 0.1, 0.2)   # building, walled, fenced, lawn
    glass_facades: float = 0.08
    raised_entrances: float = 0.5          # doors up a few steps (stairs, often a ramp)
    ramps: float = 0.6
    window_reflect: float = 0.35
    night: bool = False                    # lamps shine, windows are lit
    lit_windows: float = 0.0
    lamp_colours: tuple[tuple[float, float, float], ...] = ((1.0, 0.62, 0.28),)
    lamp_power: float = 8.0
    wet: tuple[float, float] = (0.0, 0.0)  # range of road wetness (puddle reflectance)
    chunk_length: float = 40.0


@dataclass(frozen=True)
class WalkConfig:
    step: float = 0.6                      # metres between frames
    frames_per_street: int = 40
    height: float = 0.5                    # camera above the surface the robot stands on
    look_around_deg: float = 25.0          # slow head turns
    pitch_deg: tuple[float, float] = (-9.0, -2.0)
    jitter_deg: tuple[float, float, float] = (1.5, 0.8, 1.0)   # yaw, pitch, roll per frame
    gait_roll_deg: float = 2.0


@dataclass(frozen=True)
class Light:
    position: np.ndarray       # (3,)
    colour: np.ndarray         # (3,) linear RGB power


@dataclass(frozen=True)
class Mover:
    """Primitives that move along x at a constant speed, wrapping inside [lo, hi)."""
    parts: tuple
    x: float
    speed: float
    lo: float
    hi: float

    def at(self, time: float) -> list:
        dx = (self.x - self.lo + self.speed * time) % (self.hi - self.lo) + self.lo - self.x
        return [_shifted(p, dx) for p in self.parts]


def _shifted(p, dx: float):
    c = p.centre
    return replace(p, centre=(c[0] + dx,) + tuple(c[1:]))


@dataclass
class Chunk:
    static: list = field(default_factory=list)
    movers: list = field(default_factory=list)
    lights: list = field(default_factory=list)
    ground: list = field(default_factory=list)          # road-level regions (markings, manholes)
    crossing: tuple[float, float] | None = None         # x range of a side street


def _choose(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _grey(rng, lo: float, hi: float, tint: float = 0.04) -> tuple[float, float, float]:
    g = rng.uniform(lo, hi)
    return tuple(np.clip(g * rng.uniform(1 - tint, 1 + tint, 3), 0, 255))


def _facade_tex(rng) -> Tex:
    kind, colour, mortar = FACADES[int(rng.integers(len(FACADES)))]
    size = {"bricks": (0.25, 0.075), "concrete": (2.4, 1.2), "plaster": (1.0, 1.0)}[kind]
    return Tex(kind, colour, mortar, size, float(rng.uniform(0, 100)))


class Street:
    """One street of a task: its cross-section, materials, chunks and the robot's walk."""

    def __init__(self, cfg: SceneConfig, walk: WalkConfig, key: tuple[int, ...]):
        """`key`: non-negative ints that pick this street, e.g. (seed, task, street index)."""
        self.cfg, self.walk = cfg, walk
        self.key = key
        rng = np.random.default_rng([*key, 0])
        self.rh = rng.uniform(3.2, 6.0)
        self.cw = rng.uniform(0.15, 0.25)
        self.ch = rng.uniform(0.1, 0.16)
        self.ww = rng.uniform(2.2, 3.6)
        self.w0 = self.rh + self.cw               # sidewalk from w0 to w1 (distance from the road axis)
        self.w1 = self.w0 + self.ww
        self.side = int(rng.choice([-1, 1]))      # which sidewalk the robot walks on
        self.x_start = rng.uniform(0, cfg.chunk_length)
        self.parking = self.rh >= 4.6
        # Road and sidewalk greys overlap on purpose: geometry (the curb) must separate them.
        self.road_tex = Tex("asphalt", _grey(rng, 55, 110), offset=float(rng.uniform(0, 100)))
        pave = rng.random()
        if pave < 0.25:
            self.walk_tex = Tex("asphalt", _grey(rng, 70, 120), offset=float(rng.uniform(0, 100)))
        else:
            colour = (150, 105, 90) if pave > 0.85 else _grey(rng, 95, 165)
            size = [(0.5, 0.5), (0.6, 0.3), (0.3, 0.3), (0.2, 0.1)][int(rng.integers(4))]
            self.walk_tex = Tex("paving", colour, tuple(np.asarray(colour) * 0.6), size, float(rng.uniform(0, 100)))
        self.curb_tex = Tex("concrete", _grey(rng, 135, 190), size=(1.0, 1.0), offset=float(rng.uniform(0, 100)))
        lush = rng.random()
        self.grass_tex = Tex("grass", (50 + 30 * lush, 95 + 20 * lush, 35), (110, 115, 60), offset=float(rng.uniform(0, 100)))
        self.foliage = Tex("foliage", (40, 75, 30), (90, 115, 45))
        self.stair_tex = _choose(rng, [self.walk_tex, Tex("concrete", _grey(rng, 120, 180), size=(0.3, 0.15))])
        self.wet = rng.uniform(*cfg.wet)
        self.lamp_colour = np.asarray(cfg.lamp_colours[int(rng.integers(len(cfg.lamp_colours)))])
        self.lamp_spacing = rng.uniform(16, 26)
        self.look_phase = rng.uniform(0, 2 * np.pi, 3)
        self.look_bias = np.radians(rng.uniform(0, 12)) * self.side
        self.pitch0 = np.radians(rng.uniform(*walk.pitch_deg))
        self._chunks: dict[int, Chunk] = {}

    # ---- the walk -------------------------------------------------------------------

    def pose(self, k: int) -> Pose:
        """Camera pose at frame k of this street: walking along the sidewalk, head swaying."""
        w = self.walk
        rng = np.random.default_rng([*self.key, k, 2])
        x = self.x_start + k * w.step
        # Keep to the middle of the sidewalk, clear of furniture by the curb and by walls.
        band = 0.35 + 0.25 * (0.5 + 0.5 * np.sin(2 * np.pi * k / 57 + self.look_phase[2]))
        y = self.side * (self.w0 + self.ww * band)
        crossing = self.chunk(int(np.floor(x / self.cfg.chunk_length))).crossing
        on_road = crossing is not None and crossing[0] - self.cw <= x <= crossing[1] + self.cw
        gait = rng.uniform(0, 2 * np.pi)
        z = (0.0 if on_road else self.ch) + w.height + 0.015 * np.sin(gait)
        jy, jp, jr = np.radians(w.jitter_deg)
        look = np.radians(w.look_around_deg)
        yaw = (self.look_bias + look * np.sin(2 * np.pi * k / 37 + self.look_phase[0])
               + 0.3 * look * np.sin(2 * np.pi * k / 9 + self.look_phase[1]) + rng.normal(0, jy))
        pitch = self.pitch0 + 0.5 * jp * np.sin(gait) + rng.normal(0, jp)
        roll = np.radians(w.gait_roll_deg) * np.sin(gait + 1.0) + rng.normal(0, jr)
        return Pose(np.array([x, y, z]), rotation(yaw, pitch, roll))

    def view(self, k: int, ahead: float = 90.0, behind: float = 25.0) -> tuple[Pose, list, list[Light]]:
        """Pose, primitives (ground plane first) and lights for frame k."""
        pose = self.pose(k)
        x = pose.position[0]
        L = self.cfg.chunk_length
        chunks = [self.chunk(c) for c in range(int(np.floor((x - behind) / L)), int(np.floor((x + ahead) / L)) + 1)]
        regions = [Region(Cls.ROAD, self.road_tex, rect=(-BIG, -self.rh, BIG, self.rh), wet=self.wet)]
        for ch in chunks:
            regions += ch.ground
        ground = GroundPlane(Layout(Region(Cls.TERRAIN, self.grass_tex), tuple(regions)))
        prims = [ground]
        for ch in chunks:
            prims += ch.static
            for m in ch.movers:
                parts = m.at(k * FRAME_DT)
                # Whoever would stand where the robot is steps aside (is not drawn).
                if all(np.hypot(p.centre[0] - x, p.centre[1] - pose.position[1]) > 1.2 for p in parts):
                    prims += parts
        lights = [li for ch in chunks for li in ch.lights if abs(li.position[0] - x) < 60]
        return pose, prims, lights

    # ---- chunks ---------------------------------------------------------------------

    def chunk(self, c: int) -> Chunk:
        if c not in self._chunks:
            self._chunks[c] = self._build(c)
        return self._chunks[c]

    def _build(self, c: int) -> Chunk:
        cfg, rng = self.cfg, np.random.default_rng([*self.key, c & 0xFFFFFFFF, 1])
        L = cfg.chunk_length
        x0, x1 = c * L, (c + 1) * L
        out = Chunk()
        underpass = None
        if rng.random() < cfg.underpass:
            underpass = (x0 + rng.uniform(3, 8), x1 - rng.uniform(3, 8))
        elif rng.random() < cfg.crossing:
            hw = rng.uniform(3.0, 4.5)
            xc = rng.uniform(x0 + 8 + hw, x1 - 8 - hw)
            out.crossing = (xc - hw, xc + hw)
        self._road(out, rng, x0, x1)
        spans = [(x0, x1)]
        if out.crossing:
            xa, xb = out.crossing
            spans = [(x0, xa - self.cw), (xb + self.cw, x1)]
        for s in (-1, 1):
            for a, b in spans:
                regions = [Region(Cls.SIDEWALK, self.walk_tex, rect=self._rect(a, b, self.w0, self.w1, s), wet=self.wet * 0.6)]
                build = [(a, b)] if underpass is None else [(a, underpass[0] - 2), (underpass[1] + 2, b)]
                for fa, fb in build:
                    if fb - fa > 6:
                        self._frontage(out, rng, regions, fa, fb, s)
                self._furniture(out, rng, regions, a, b, s, underpass)
                self._people(out, rng, regions, a, b, s)
                out.static.append(Block(((a + b) / 2, s * (self.rh + self.cw / 2), self.ch / 2),
                                        ((b - a) / 2, self.cw / 2, self.ch / 2), Surface(Cls.CURB, self.curb_tex),
                                        cast_shadow=False))
                side = Surface(Cls.SIDEWALK, self.walk_tex)
                out.static.append(Block(((a + b) / 2, s * (self.w0 + DEPTH / 2), self.ch / 2), ((b - a) / 2, DEPTH / 2, self.ch / 2),
                                        Layout(Region(Cls.TERRAIN, self.grass_tex), tuple(regions), side), cast_shadow=False))
            if out.crossing:
                self._crossing(out, rng, s)
            self._background(out, rng, x0, x1, s)
            self._traffic(out, rng, x0, x1, s)
        if underpass is not None:
            self._underpass(out, rng, *underpass)
        return out

    def _rect(self, xa, xb, o0, o1, s):
        """A plan rectangle from x range and a range of distances from the road axis on side s."""
        y0, y1 = sorted((s * o0, s * o1))
        return (xa, y0, xb, y1)

    def _road(self, out: Chunk, rng, x0, x1):
        mark = Tex("asphalt", (215, 215, 205), offset=3.0)
        yellow = Tex("asphalt", (215, 180, 60), offset=5.0)
        centre = yellow if rng.random() < 0.4 else mark
        for xs in np.arange(x0, x1, 6.0):
            out.ground.append(Region(Cls.ROAD, centre, rect=(xs, -0.06, xs + 3.0, 0.06), wet=self.wet))
        for s in (-1, 1):
            out.ground.append(Region(Cls.ROAD, mark, rect=self._rect(x0, x1, self.rh - 0.35, self.rh - 0.25, s), wet=self.wet))
        if out.crossing:
            xa, xb = out.crossing
            out.ground.append(Region(Cls.ROAD, self.road_tex, rect=(xa, -BIG, xb, BIG), wet=self.wet))
            for ys in np.arange(-self.rh + 0.4, self.rh - 0.5, 1.0):         # zebra across the main road
                out.ground.append(Region(Cls.ROAD, mark, rect=(xa - 4.0, ys, xa - 1.0, ys + 0.5), wet=self.wet))
            for s in (-1, 1):                                                 # and across the side street
                for xs in np.arange(xa + 0.4, xb - 0.5, 1.0):
                    out.ground.append(Region(Cls.ROAD, mark, rect=self._rect(xs, xs + 0.5, self.w0 + 0.5, self.w0 + 3.5, s), wet=self.wet))
        for _ in range(rng.poisson(self.cfg.rates.manhole * (x1 - x0) / 10)):
            cx, cy = rng.uniform(x0, x1), rng.uniform(-self.rh + 0.6, self.rh - 0.6)
            out.ground.append(Region(Cls.MANHOLE, Tex("paving", (60, 58, 55), (35, 35, 35), (0.08, 0.08)), disc=(cx, cy, rng.uniform(0.3, 0.4))))

    # ---- what stands beside the road ------------------------------------------------

    def _frontage(self, out: Chunk, rng, regions, a, b, s):
        x = a + rng.uniform(0, 3)
        while x < b - 6:
            width = min(rng.uniform(12, 32), b - 1 - x)
            if width < 6:
                break
            setback = self.w1 + rng.uniform(1.5, 9.0)
            kind = rng.choice(4, p=self.cfg.frontage)
            if kind == 0:
                self._building(out, rng, regions, x, x + width, s, setback)
            elif kind == 1:
                gate = self._wall(out, rng, x, x + width, s, setback)
                self._building(out, rng, regions, x, x + width, s, setback + rng.uniform(4, 10), gate=gate)
            elif kind == 2:
                self._fence(out, rng, x, x + width, s, setback)
                for _ in range(int(rng.integers(1, 4))):
                    out.static += obj.tree(rng.uniform(x, x + width), s * (setback + rng.uniform(2, 8)), self.ch, rng, self.foliage)
                if rng.random() < 0.7:
                    self._building(out, rng, None, x, x + width, s, setback + rng.uniform(12, 22))
            else:
                near = self.w1 + 2
                if rng.random() < 0.3:       # a sports ground: a running track ("runway") along the lawn
                    o0 = self.w1 + rng.uniform(1.0, 3.0)
                    near = o0 + rng.uniform(4, 9)
                    track = Tex("asphalt", (165, 70, 55), offset=float(rng.uniform(0, 100)))
                    regions.append(Region(Cls.RUNWAY, track, rect=self._rect(x, x + width, o0, near, s)))
                    near += 1.5
                for _ in range(rng.poisson(width / 6)):
                    tx, toff = rng.uniform(x, x + width), rng.uniform(near, max(near, setback) + 8)
                    out.static += obj.tree(tx, s * toff, self.ch, rng, self.foliage)
                if rng.random() < 0.5:
                    self._building(out, rng, None, x, x + width, s, setback + rng.uniform(15, 28))
            x += width + rng.uniform(2, 9)

    def _facade(self, rng, label, half_len, windows=None, doors=(), glass=None) -> Facade:
        curtain = rng.random() < self.cfg.glass_facades if glass is None else glass
        return Facade(label, _facade_tex(rng), Tex("concrete", _grey(rng, 90, 140), size=(3.0, 3.0)), half_len,
                      windows, doors, curtain, glass_reflect=0.85 if curtain else self.cfg.window_reflect)

    def _windows(self, rng, base, top) -> Windows:
        pitch = rng.uniform(1.6, 3.2)
        return Windows(pitch, pitch * rng.uniform(0.45, 0.75), rng.uniform(0.8, 1.0), rng.uniform(1.2, 1.8),
                       rng.uniform(3.2, 3.9), base, top, Tex("smooth", _grey(rng, 60, 220, 0.02)),
                       lit=self.cfg.lit_windows)

    def _building(self, out: Chunk, rng, regions, xa, xb, s, setback, gate=None):
        """A building whose street face is `setback` from the road axis; doors (with paths
        from the sidewalk when `regions` is given), raised entrances with stairs and ramps."""
        depth = rng.uniform(10, 25)
        height = int(rng.integers(1, 7)) * rng.uniform(3.2, 3.9) + rng.uniform(0.3, 1.2)
        xc = (xa + xb) / 2
        hp = int(rng.integers(2, 6)) * rng.uniform(0.14, 0.17) if rng.random() < self.cfg.raised_entrances else 0.0
        face = 2 if s > 0 else 3
        doors, n_doors = [], 1 if xb - xa < 18 else int(rng.integers(1, 3))
        slots = np.linspace(xa, xb, n_doors + 2)[1:-1] + rng.uniform(-2, 2, n_doors)
        if gate is not None:
            slots = np.array([gate])
        for xd in slots:
            dw = rng.uniform(1.0, 2.2)
            colour, reflect = DOORS[int(rng.integers(len(DOORS)))]
            u = s * (xd - xc)
            doors.append(Door(face, u - dw / 2, u + dw / 2, self.ch + hp, self.ch + hp + rng.uniform(2.1, 2.6),
                              Tex("smooth", colour), reflect))
            self._entrance(out, rng, regions, xd, dw, s, setback, hp, xa, xb)
        mat = self._facade(rng, Cls.BUILDING, (depth / 2, (xb - xa) / 2), self._windows(rng, self.ch + hp, height), tuple(doors))
        out.static.append(Block((xc, s * (setback + depth / 2), height / 2), ((xb - xa) / 2, depth / 2, height / 2), mat))

    def _entrance(self, out: Chunk, rng, regions, xd, dw, s, setback, hp, xa, xb):
        stair = Surface(Cls.STAIR, self.stair_tex)
        land = 0.0
        if hp > 0:
            lw, land = dw + rng.uniform(0.8, 2.0), rng.uniform(1.2, 1.8)
            rise = 0.15
            steps = max(1, int(round(hp / rise)))
            rise, tread = hp / steps, rng.uniform(0.28, 0.35)
            out.static.append(Block((xd, s * (setback - land / 2), (self.ch + hp) / 2), (lw / 2, land / 2, (self.ch + hp) / 2), stair))
            for j in range(steps - 1):
                top = self.ch + (j + 1) * rise
                reach = (steps - 1 - j) * tread
                out.static.append(Block((xd, s * (setback - land - reach / 2), top / 2), (lw / 2, reach / 2, top / 2), stair))
            run = hp / rng.uniform(0.08, 0.1)
            dirx = rng.choice([-1, 1])
            x_near = xd + dirx * lw / 2
            if rng.random() < self.cfg.ramps and xa + 0.5 < x_near + dirx * run < xb - 0.5:
                hz = (self.ch + hp) / 2
                a = -dirx * hp / run
                out.static.append(Block((x_near + dirx * run / 2, s * (setback - land / 2), hz), (run / 2, land / 2, hz),
                                        Surface(Cls.RAMP, Tex("concrete", _grey(rng, 120, 175), size=(0.6, 0.1))),
                                        cuts=(((-a, 0.0, 1.0), hz - hp / 2),)))
            land += (steps - 1) * tread
        if regions is not None:
            pw = dw + rng.uniform(0.5, 2.5)
            regions.append(Region(Cls.SIDEWALK, self.walk_tex, rect=self._rect(xd - pw / 2, xd + pw / 2, self.w1 - 0.01, setback - land + 0.01, s),
                                  wet=self.wet * 0.6))
        facade_y = s * setback
        r = self.cfg.rates
        if rng.random() < r.cctv * 5:
            out.static += obj.cctv(xd + rng.choice([-1, 1]) * (dw / 2 + 0.5), facade_y, self.ch + hp + rng.uniform(2.6, 3.4), (0, -s), rng)
        if rng.random() < r.belt * 5:
            n = int(rng.integers(2, 5))
            out.static += obj.belt_barrier(xd + dw / 2 + 0.4, s * (setback - land - rng.uniform(1.0, 2.0)), self.ch, True, n, rng)
        if rng.random() < r.dustbin * 3:
            out.static += obj.dustbin(xd - dw / 2 - rng.uniform(0.8, 1.5), s * (setback - land - 0.5), self.ch, rng)
        if rng.random() < r.bicycle * 3:
            for k in range(int(rng.integers(1, 5))):
                out.static += obj.bicycle(xd + dw / 2 + 2.0 + 0.7 * k, s * (setback - land - 1.5), self.ch, np.pi / 2, rng)

    def _wall(self, out: Chunk, rng, xa, xb, s, setback) -> float:
        """A wall along the property line with a gate; returns the gate's x."""
        height = rng.uniform(1.0, 2.6)
        gate, gw = rng.uniform(xa + 3, xb - 3), rng.uniform(2.0, 4.0)
        for a, b in ((xa, gate - gw / 2), (gate + gw / 2, xb)):
            if b - a > 0.3:
                mat = self._facade(rng, Cls.WALL, (0.15, (b - a) / 2), glass=False)
                out.static.append(Block(((a + b) / 2, s * (setback + 0.15), height / 2), ((b - a) / 2, 0.15, height / 2), mat))
        return gate

    def _fence(self, out: Chunk, rng, xa, xb, s, setback):
        height = rng.uniform(1.1, 2.0)
        rails = (self.ch + 0.1 - height / 2, height / 2 - 0.08)         # in the block's frame
        bars = FenceAlpha(rng.uniform(0.1, 0.2), rng.uniform(0.015, 0.03), rails)
        mat = Surface(Cls.FENCE, Tex("smooth", _grey(rng, 30, 120, 0.1)))
        out.static.append(Block(((xa + xb) / 2, s * setback, height / 2), ((xb - xa) / 2, 0.03, height / 2), mat, alpha=bars))

    def _background(self, out: Chunk, rng, x0, x1, s):
        """Big buildings far behind the frontage, so gaps show a skyline rather than open land."""
        x = x0 + rng.uniform(-5, 5)
        while x < x1:
            width = rng.uniform(15, 40)
            off = rng.uniform(38, 52)
            height = rng.uniform(8, 35)
            windows = self._windows(rng, self.ch, height)
            mat = self._facade(rng, Cls.BUILDING, (7.0, width / 2), windows)
            out.static.append(Block((x + width / 2, s * (off + 7), height / 2), (width / 2, 7.0, height / 2), mat))
            x += width + rng.uniform(0, 12)

    def _furniture(self, out: Chunk, rng, regions, a, b, s, underpass):
        r, cfg = self.cfg.rates, self.cfg
        edge = self.w0 + 0.35                # between the curb and where people walk

        free = [(a, b)] if underpass is None else [(a, underpass[0] - 3), (underpass[1] + 3, b)]

        def spots(count: int, margin: float = 0.0) -> list[float]:
            """x positions for things beside the sidewalk, none under a bridge (they would pierce its deck)."""
            room = [(p + margin, q - margin) for p, q in free if q - p > 2 * margin]
            if not room:
                return []
            weights = np.array([q - p for p, q in room])
            picks = rng.choice(len(room), count, p=weights / weights.sum())
            return [rng.uniform(*room[i]) for i in picks]

        n = int((b - a) / self.lamp_spacing) + 1
        for k in range(n):
            lx = a + (k + 0.5) * (b - a) / n
            if underpass and underpass[0] - 1 < lx < underpass[1] + 1:
                continue
            emit = tuple(self.lamp_colour * cfg.lamp_power * 4) if cfg.night else None
            parts, pos = obj.lamp_post(lx, s * edge, self.ch, -s, rng, emit)
            out.static += parts
            if cfg.night:
                out.lights.append(Light(pos, self.lamp_colour * cfg.lamp_power))
        length = b - a
        for _ in range(rng.poisson(r.sign * length / 10)):
            facing = [(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, float(-s), 0.0)][int(rng.integers(3))]
            out.static += obj.sign_post(rng.uniform(a, b), s * edge, self.ch, facing, rng)
        for _ in range(rng.poisson(r.dustbin * length / 10)):
            out.static += obj.dustbin(rng.uniform(a, b), s * edge, self.ch, rng)
        for _ in range(rng.poisson(r.hydrant * length / 10)):
            out.static += obj.hydrant(rng.uniform(a, b), s * edge, self.ch, rng)
        for x in spots(rng.poisson(r.tree * length / 10)):
            out.static += obj.tree(x, s * (self.w1 + rng.uniform(0.8, 2.0)), self.ch, rng, self.foliage)
        for x in spots(rng.poisson(r.bush * length / 10)):
            out.static += obj.bush(x, s * (self.w1 + rng.uniform(0.8, 4.0)), self.ch, rng, self.foliage)
        for x in spots(rng.poisson(r.flowerbed * length / 10), 2.5):
            half = (rng.uniform(0.8, 2.5), rng.uniform(0.5, 1.0))
            border = _choose(rng, [self.curb_tex, Tex("bricks", (140, 70, 50), (190, 185, 175), (0.25, 0.075))])
            out.static += obj.flowerbed(x, s * (self.w1 + half[1] + rng.uniform(0.2, 1.5)),
                                        self.ch, half, rng, border)
        for x in spots(rng.poisson(r.bicycle * length / 10)):
            out.static += obj.bicycle(x, s * (self.w1 + 0.5), self.ch, np.pi / 2, rng)
        for _ in range(rng.poisson(r.manhole * length / 10)):
            regions.append(Region(Cls.MANHOLE, Tex("paving", (70, 68, 64), (40, 40, 40), (0.08, 0.08)),
                                  disc=(rng.uniform(a, b), s * rng.uniform(self.w0 + 0.5, self.w1 - 0.5), rng.uniform(0.3, 0.4))))
        for _ in range(rng.poisson(r.cctv * length / 10)):
            # On a short pole at the sidewalk edge, looking along the street.
            x = rng.uniform(a, b)
            h = rng.uniform(3.0, 4.0)
            out.static.append(Cylinder((x, s * edge), 0.05, self.ch, self.ch + h, Surface(Cls.POLE, Tex("smooth", (120, 120, 122)))))
            out.static += obj.cctv(x, s * edge, self.ch + h - 0.1, (rng.choice([-1.0, 1.0]), 0.0), rng)
        for x in spots(rng.poisson(r.belt * length / 10), 3.0):
            out.static += obj.belt_barrier(x - 3.0, s * (self.w1 - 0.2), self.ch, True, int(rng.integers(2, 5)), rng)

    def _people(self, out: Chunk, rng, regions, a, b, s):
        r = self.cfg.rates
        for _ in range(rng.poisson(r.person * (b - a) / 10)):
            x = rng.uniform(a, b)
            if rng.random() < 0.7:       # walking along the sidewalk
                y = s * rng.uniform(self.w0 + 0.4, self.w1 - 0.3)
                speed = rng.choice([-1, 1]) * rng.uniform(0.8, 1.5)
                out.movers.append(Mover(tuple(obj.person(x, y, self.ch, rng)), x, speed, a, b))
            else:                        # standing on the lawn or a path
                out.static += obj.person(x, s * rng.uniform(self.w1 + 0.3, self.w1 + 5), self.ch, rng)

    def _crossing(self, out: Chunk, rng, s):
        xa, xb = out.crossing
        curb = Surface(Cls.CURB, self.curb_tex)
        for x0, x1 in ((xa - self.cw, xa), (xb, xb + self.cw)):
            out.static.append(Block(((x0 + x1) / 2, s * (self.rh + DEPTH / 2), self.ch / 2), (self.cw / 2, DEPTH / 2, self.ch / 2),
                                    curb, cast_shadow=False))
        for x, facing in ((xa - self.cw - 0.5, (-1.0, 0.0, 0.0)), (xb + self.cw + 0.5, (1.0, 0.0, 0.0))):
            if rng.random() < 0.7:
                out.static += obj.traffic_light(x, s * (self.w0 + 0.4), self.ch, facing, rng, 30.0 if self.cfg.night else 3.0)
            else:
                out.static += obj.sign_post(x, s * (self.w0 + 0.4), self.ch, facing, rng)

    def _traffic(self, out: Chunk, rng, x0, x1, s):
        """Parked and moving vehicles, riders on the road on side s (traffic keeps right)."""
        r, night = self.cfg.rates, self.cfg.night
        if self.parking:
            x = x0 + rng.uniform(0, 4)
            while x < x1 - 5:
                if out.crossing and out.crossing[0] - 6 < x < out.crossing[1] + 1:
                    x += 1.0
                    continue
                pick = rng.random()
                if pick < r.parked_car * 0.55:
                    out.static += obj.car(x + 2.4, s * (self.rh - 1.1), 0.0, rng.choice([0.0, np.pi]) + rng.normal(0, 0.02), rng)
                elif pick < r.parked_car * 0.55 + r.motorcycle * 5:
                    out.static += obj.motorcycle(x + 1.0, s * (self.rh - 0.8), 0.0, 0.0, rng)
                x += rng.uniform(5.0, 7.0)
        lane = (self.rh - 2.2) / 2 if self.parking else self.rh / 2
        direction = -s                                     # right-hand traffic along +x on side y < 0
        heading = 0.0 if direction > 0 else np.pi
        # One speed per lane and gaps between vehicles: the queue wraps around the chunk
        # without anyone driving through anyone.
        speed = direction * rng.uniform(4.0, 9.0)
        kinds = ("car", "truck", "bus", "rider")
        rates = np.array([r.moving_car, r.truck, r.bus, r.rider])
        length = {"car": 5.0, "truck": 13.0, "bus": 12.5, "rider": 2.2}      # room each takes, either heading
        x = x0 + rng.uniform(0, 5)
        while rates.sum() > 0:
            x += rng.exponential(10 / rates.sum())
            kind = kinds[rng.choice(4, p=rates / rates.sum())]
            if x + length[kind] > x1 - 1:
                break
            xc, y = x + length[kind] / 2, s * lane
            if kind == "car":
                parts = obj.car(xc, y, 0.0, heading, rng, night)
            elif kind == "truck":
                parts = obj.truck(xc, y, 0.0, heading, rng)
            elif kind == "bus":
                parts = obj.bus(xc, y, 0.0, heading, rng)
            else:
                parts = obj.bicycle(xc, y, 0.0, heading, rng) + obj.person(xc - 0.1, y, 0.78, rng, Cls.RIDER, seated=True)
            out.movers.append(Mover(tuple(parts), xc, speed, x0, x1))
            x += length[kind] + 1.5

    def _underpass(self, out: Chunk, rng, ua, ub):
        """A bridge over the street: deck (building), side walls (wall), ceiling lamps, cameras."""
        hu = rng.uniform(3.8, 4.8)
        span = self.w1 + 0.6
        concrete = Tex("concrete", _grey(rng, 110, 160), size=(2.0, 1.0), offset=float(rng.uniform(0, 100)))
        xc, hx = (ua + ub) / 2, (ub - ua) / 2
        deck = Facade(Cls.BUILDING, concrete, concrete, (span, hx))
        out.static.append(Block((xc, 0.0, hu + 0.6), (hx, span, 0.6), deck))
        wall_tex = _choose(rng, [concrete, Tex("paving", _grey(rng, 150, 200), _grey(rng, 80, 120), (0.3, 0.15), 1.0)])
        for s in (-1, 1):
            out.static.append(Block((xc, s * (self.w1 + 0.3), hu / 2), (hx, 0.3, hu / 2), Facade(Cls.WALL, wall_tex, concrete, (0.3, hx))))
            out.static.append(Block((xc, s * (span - 0.15), hu + 1.7), (hx, 0.15, 0.5), Facade(Cls.WALL, concrete, concrete, (0.15, hx))))
            r = self.cfg.rates
            for _ in range(rng.poisson(r.cctv * 10 * (ub - ua) / 10)):
                out.static += obj.cctv(rng.uniform(ua, ub), s * self.w1, rng.uniform(2.6, hu - 0.4), (0.0, float(-s)), rng)
            for _ in range(rng.poisson(r.dustbin * (ub - ua) / 10)):
                out.static += obj.dustbin(rng.uniform(ua, ub), s * (self.w1 - 0.35), self.ch, rng)
            for _ in range(rng.poisson(r.hydrant * 2 * (ub - ua) / 10)):
                out.static += obj.hydrant(rng.uniform(ua, ub), s * (self.w1 - 0.3), self.ch, rng)
        for _ in range(rng.poisson(self.cfg.rates.cctv * 5 * (ub - ua) / 10)):
            out.static += obj.dome_camera(rng.uniform(ua, ub), rng.uniform(-span + 1, span - 1), hu, rng)
        lamp_emit = tuple(self.lamp_colour * self.cfg.lamp_power * 3)
        fixture = Surface(Cls.BUILDING, Tex("smooth", (230, 228, 220)), emit=lamp_emit if self.cfg.night else None)
        for x in np.arange(ua + 2.0, ub - 1.0, rng.uniform(5.0, 8.0)):
            for y in (-self.rh / 2, self.rh / 2, -(self.w0 + self.w1) / 2, (self.w0 + self.w1) / 2):
                out.static.append(Block((x, y, hu - 0.05), (0.6, 0.1, 0.05), fixture, cast_shadow=False))
                if self.cfg.night:
                    out.lights.append(Light(np.array([x, y, hu - 0.2]), self.lamp_colour * self.cfg.lamp_power * 0.5))


@dataclass(frozen=True)
class FenceAlpha:
    """Vertical bars every `pitch` metres and horizontal rails at local heights `rails`."""
    pitch: float
    bar: float
    rails: tuple[float, float]

    def __call__(self, lp: np.ndarray, face: np.ndarray) -> np.ndarray:
        bar = np.abs((lp[..., 0] % self.pitch) - self.pitch / 2) < self.bar / 2
        rail = (np.abs(lp[..., 2] - self.rails[0]) < 0.03) | (np.abs(lp[..., 2] - self.rails[1]) < 0.03)
        return bar | rail | ((face != 2) & (face != 3))

"""Analytic primitives and a vectorised ray caster with a z-buffer.

Work is vectorised per primitive: each primitive is intersected with the rays of
the pixel rectangle its bounding box projects to (most objects cover a small part
of the image), and wins the pixels where it is nearer than what was there. A second
pass asks only the winning primitive of each pixel for its surface (face, normal,
texture coordinates), so the expensive part runs once per pixel.

Intersection routines take origins and directions as scalars or arrays that
broadcast, so the same code casts camera rays (one origin) and shadow rays (one
direction, an origin per pixel).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from .camera import Intrinsics, Pose, Rays, screen_rects

INF = np.float32(np.inf)
NO_HIT = -1           # primitive index of pixels no primitive covers (sky)
GROUND = 0            # the ground plane z = 0 is always primitive 0


@dataclass
class Hit:
    """Where rays met one primitive: world point, local point, face, normal, texture coordinates."""
    p: np.ndarray          # (n, 3) world
    lp: np.ndarray         # (n, 3) in the primitive's own frame
    face: np.ndarray       # (n,) int
    normal: np.ndarray     # (n, 3) world, unit
    uv: np.ndarray         # (n, 2) texture coordinates in metres
    d: np.ndarray          # (n, 3) ray directions (z-depth scaled)
    fp: np.ndarray | None = None   # (n,) metres one pixel covers on the surface (set by the shader)

    def subset(self, m: np.ndarray) -> Hit:
        return Hit(self.p[m], self.lp[m], self.face[m], self.normal[m], self.uv[m], self.d[m], self.fp[m])


class Material(Protocol):
    def __call__(self, hit: Hit) -> "Paint": ...


@dataclass
class Paint:
    """What a material says about the hit pixels (arrays broadcast against n)."""
    label: np.ndarray | int
    albedo: np.ndarray                          # (n, 3) linear RGB in [0, 1]
    reflect: np.ndarray | float = 0.0           # mirror-like fraction (glass, wet asphalt)
    emit: np.ndarray | None = None              # (n, 3) light sent out (lamps, lit windows)


def _errstate():
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


@dataclass(eq=False)
class Block:
    """A box with a yaw about z, optionally cut by extra half-spaces n . p <= d in its
    own frame (a wedge for a ramp, a slanted windscreen). Faces 0..5 are -x,+x,-y,+y,-z,+z,
    cuts follow. `alpha` (local points, faces) -> keep mask makes see-through patterns
    (fence bars, round signs, wheel rims) in the faces rays enter by."""
    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    material: Material
    yaw: float = 0.0
    cuts: tuple[tuple[tuple[float, float, float], float], ...] = ()
    alpha: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    cast_shadow: bool = True

    def __post_init__(self):
        self._c = np.asarray(self.centre, np.float64)
        self._h = np.asarray(self.half, np.float64)
        self._cs, self._sn = float(np.cos(self.yaw)), float(np.sin(self.yaw))
        normals = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
        normals += [n for n, _ in self.cuts]
        self._normals = np.array(normals, np.float32)
        self._normals /= np.linalg.norm(self._normals, axis=1, keepdims=True)
        # Python floats: NumPy 2 would promote float32 ray arrays to float64 against float64 scalars.
        self._cf = tuple(float(v) for v in self.centre)
        self._hf = tuple(float(v) for v in self.half)
        ex = abs(self._cs) * self._h[0] + abs(self._sn) * self._h[1]
        ey = abs(self._sn) * self._h[0] + abs(self._cs) * self._h[1]
        e = np.array([ex, ey, self._h[2]])
        self._bounds = (self._c - e, self._c + e)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._bounds

    def _local(self, o, d):
        lx, ly, lz = o[0] - self._cf[0], o[1] - self._cf[1], o[2] - self._cf[2]
        if self.yaw == 0.0:
            return (lx, ly, lz), d
        c, s = self._cs, self._sn
        return (c * lx + s * ly, -s * lx + c * ly, lz), (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])

    def intersect(self, o, d, inv=None, with_face: bool = False):
        """Ray parameter of the entry point (inf on a miss), and the entry face if asked."""
        lo, ld = self._local(o, d)
        want_face = with_face or self.alpha is not None
        if inv is None or self.yaw != 0.0:
            with _errstate():
                inv = [np.float32(1.0) / c for c in ld]
        tn = tf = face = None
        with _errstate():
            for a in range(3):
                t1 = (-self._hf[a] - lo[a]) * inv[a]
                t2 = (self._hf[a] - lo[a]) * inv[a]
                near, far = np.minimum(t1, t2), np.maximum(t1, t2)
                if tn is None:
                    tn, tf = near, far
                    if want_face:
                        face = np.where(ld[0] > 0, 0, 1)
                else:
                    if want_face:
                        face = np.where(near > tn, 2 * a + (ld[a] <= 0), face)
                    tn, tf = np.maximum(tn, near), np.minimum(tf, far)
            for k, (n, dist) in enumerate(self.cuts):
                denom = n[0] * ld[0] + n[1] * ld[1] + n[2] * ld[2]
                num = dist - (n[0] * lo[0] + n[1] * lo[1] + n[2] * lo[2])
                t = num / denom
                enter = denom < 0
                if want_face:
                    face = np.where(enter & (t > tn), 6 + k, face)
                tn = np.where(enter, np.maximum(tn, t), tn)
                tf = np.where(denom > 0, np.minimum(tf, t), tf)
                tf = np.where((denom == 0) & (num < 0), -INF, tf)
            hit = (tn <= tf) & (tn > 1e-4)
            if self.alpha is not None:
                p = np.stack(np.broadcast_arrays(*[lo[a] + tn * ld[a] for a in range(3)]), -1)
                hit &= self.alpha(p, np.broadcast_to(face, p.shape[:-1]))
        t = np.where(hit, tn, INF).astype(np.float32, copy=False)
        return (t, face) if with_face else t

    def surface(self, p: np.ndarray, d: np.ndarray, o: np.ndarray) -> Hit:
        _, face = self.intersect(o, tuple(d.T), with_face=True)
        face = np.broadcast_to(face, (len(p),)).astype(np.int64)
        lo = p - self._c
        c, s = self._cs, self._sn
        lp = np.stack([c * lo[:, 0] + s * lo[:, 1], -s * lo[:, 0] + c * lo[:, 1], lo[:, 2]], 1).astype(np.float32)
        ln = self._normals[face]
        normal = np.stack([c * ln[:, 0] - s * ln[:, 1], s * ln[:, 0] + c * ln[:, 1], ln[:, 2]], 1)
        # Texture axes: horizontal along the face and world height on walls, plan (x, y) on top.
        side = np.abs(ln[:, 2]) < 0.7
        along = np.where(np.abs(ln[:, 0]) > np.abs(ln[:, 1]), np.sign(ln[:, 0]) * lp[:, 1], -np.sign(ln[:, 1]) * lp[:, 0])
        uv = np.where(side[:, None], np.stack([along, p[:, 2]], 1), lp[:, :2]).astype(np.float32)
        return Hit(p, lp, face, normal.astype(np.float32), uv, d)


@dataclass(eq=False)
class Cylinder:
    """An upright capped cylinder (poles, trunks, limbs, bins); faces: 0 side, 1 top, 2 bottom."""
    centre: tuple[float, float]
    radius: float
    z0: float
    z1: float
    material: Material
    cast_shadow: bool = True

    def __post_init__(self):
        x, y = self._x, self._y = float(self.centre[0]), float(self.centre[1])
        r = self._r = float(self.radius)
        self._z = (float(self.z1), float(self.z0))
        self._bounds = (np.array([x - r, y - r, self.z0]), np.array([x + r, y + r, self.z1]))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._bounds

    def intersect(self, o, d, inv=None, with_face: bool = False):
        lx, ly = o[0] - self._x, o[1] - self._y
        r2 = self._r * self._r
        with _errstate():
            a = d[0] * d[0] + d[1] * d[1]
            b = lx * d[0] + ly * d[1]
            c = lx * lx + ly * ly - r2
            disc = b * b - a * c
            ts = (-b - np.sqrt(np.maximum(disc, 0))) / a
            z = o[2] + ts * d[2]
            side = (disc >= 0) & (ts > 1e-4) & (z >= self._z[1]) & (z <= self._z[0])
            t_side = np.where(side, ts, INF)
            t = t_side
            caps = []
            for z in self._z:
                tc = (z - o[2]) / d[2]
                x, y = lx + tc * d[0], ly + tc * d[1]
                tc = np.where((tc > 1e-4) & (x * x + y * y <= r2), tc, INF)
                caps.append(tc)
                t = np.minimum(t, tc)
            t = t.astype(np.float32, copy=False)
        if with_face:
            return t, np.where(t < t_side, np.where(caps[0] <= caps[1], 1, 2), 0)
        return t

    def surface(self, p: np.ndarray, d: np.ndarray, o: np.ndarray) -> Hit:
        _, face = self.intersect(o, tuple(d.T), with_face=True)
        face = np.broadcast_to(face, (len(p),))
        lp = (p - np.array([self.centre[0], self.centre[1], 0.0])).astype(np.float32)
        radial = lp.copy()
        radial[:, 2] = 0
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-6)
        cap = face[:, None] > 0
        normal = np.where(cap, np.where(face[:, None] == 1, np.float32([0, 0, 1]), np.float32([0, 0, -1])), radial)
        ang = np.arctan2(lp[:, 1], lp[:, 0]) * self.radius
        uv = np.where(cap, lp[:, :2], np.stack([ang, p[:, 2]], 1)).astype(np.float32)
        return Hit(p, lp, face, normal.astype(np.float32), uv, d)


@dataclass(eq=False)
class Ellipsoid:
    """An axis-aligned ellipsoid (heads, tree crowns, bushes, wheels seen from the side)."""
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    material: Material
    cast_shadow: bool = True

    def __post_init__(self):
        c, r = np.asarray(self.centre, np.float64), np.asarray(self.radii, np.float64)
        self._bounds = (c - r, c + r)
        self._cf, self._rf = tuple(float(v) for v in c), tuple(float(v) for v in r)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._bounds

    def intersect(self, o, d, inv=None, with_face: bool = False):
        lo = [(o[a] - self._cf[a]) / self._rf[a] for a in range(3)]
        ld = [d[a] / self._rf[a] for a in range(3)]
        with _errstate():
            a = ld[0] * ld[0] + ld[1] * ld[1] + ld[2] * ld[2]
            b = lo[0] * ld[0] + lo[1] * ld[1] + lo[2] * ld[2]
            c = lo[0] * lo[0] + lo[1] * lo[1] + lo[2] * lo[2] - 1.0
            disc = b * b - a * c
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
            t = np.where((disc >= 0) & (t > 1e-4), t, INF).astype(np.float32, copy=False)
        return (t, np.zeros(np.shape(t), np.int64)) if with_face else t

    def surface(self, p: np.ndarray, d: np.ndarray, o: np.ndarray) -> Hit:
        r = np.asarray(self.radii, np.float32)
        lp = (p - np.asarray(self.centre)).astype(np.float32)
        normal = lp / (r * r)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        rm = float(np.mean(r))
        uv = np.stack([np.arctan2(lp[:, 1], lp[:, 0]) * rm, lp[:, 2] + self.centre[2]], 1)
        return Hit(p, lp, np.zeros(len(p), np.int64), normal, uv, d)


@dataclass(eq=False)
class GroundPlane:
    """The infinite plane z = 0 (roads, and whatever lies beyond the modelled blocks)."""
    material: Material
    cast_shadow: bool = False

    def intersect(self, o, d, inv=None, with_face: bool = False):
        with _errstate():
            t = np.where(d[2] < 0, -o[2] / d[2], INF).astype(np.float32, copy=False)
        return (t, np.zeros(np.shape(t), np.int64)) if with_face else t

    def surface(self, p: np.ndarray, d: np.ndarray, o: np.ndarray) -> Hit:
        n = len(p)
        return Hit(p, p.astype(np.float32), np.zeros(n, np.int64),
                   np.broadcast_to(np.float32([0, 0, 1]), (n, 3)), p[:, :2].astype(np.float32), d)


@dataclass
class Casting:
    """The z-buffer of a view: nearest hit parameter (= z-depth) and its primitive per pixel."""
    t: np.ndarray               # (H, W) float32, inf where nothing was hit
    prim: np.ndarray            # (H, W) int32 index into the primitive list, NO_HIT for sky
    rays: Rays
    primitives: list = field(default_factory=list)


def cast(primitives: list, rays: Rays, pose: Pose, intr: Intrinsics) -> Casting:
    """Nearest hit per pixel; primitives[0] must be the ground plane (it covers all
    downward rays, so it is cast over the whole image)."""
    o = tuple(float(c) for c in rays.origin)
    t = primitives[GROUND].intersect(o, rays.d)
    prim = np.where(np.isfinite(t), GROUND, NO_HIT).astype(np.int32)
    rest = primitives[1:]
    if rest:
        lo = np.array([p.bounds()[0] for p in rest])
        hi = np.array([p.bounds()[1] for p in rest])
        for k, (v0, v1, u0, u1) in enumerate(screen_rects(lo, hi, pose, intr), start=1):
            if v0 >= v1:
                continue
            win = np.s_[v0:v1, u0:u1]
            tk = primitives[k].intersect(o, [c[win] for c in rays.d], [c[win] for c in rays.inv])
            tb = t[win]
            nearer = tk < tb
            np.copyto(tb, tk, where=nearer)
            np.copyto(prim[win], np.int32(k), where=nearer)
    return Casting(t, prim, rays, primitives)


def pixels_by_primitive(prim: np.ndarray) -> dict[int, np.ndarray]:
    """Flat pixel indices grouped by the primitive that owns them (sky excluded)."""
    flat = prim.ravel()
    order = np.argsort(flat, kind="stable")
    ids, starts = np.unique(flat[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(i): g for i, g in zip(ids, groups) if i != NO_HIT}


def occluded(caster, points: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Whether rays from points (n, 3) along a fixed direction hit the caster."""
    t = caster.intersect(tuple(points.T), tuple(np.float32(direction)))
    return np.isfinite(t)

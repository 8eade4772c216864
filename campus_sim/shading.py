"""From a cast view to linear radiance: materials, sun and shadows or lamps, sky,
glass reflecting the sky, wet ground mirroring the scene."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import Intrinsics, Pose, screen_rects
from .classes import Cls
from .materials import UP
from .raycast import NO_HIT, Casting, occluded, pixels_by_primitive
from .scene import Light
from .textures import noise

SHADOW_RANGE = 60.0        # casters farther than this from the camera cast no shadow (saves time)
SHADOW_STEP = 2            # shadows are tested on every 2nd pixel in each direction
LAMP_RANGE = 25.0          # a lamp lights nothing beyond this (smoothly faded)
MAX_LAMPS = 10             # only the nearest lamps light a frame (the rest are faint or hidden)


@dataclass(frozen=True)
class Lighting:
    sun_dir: np.ndarray            # (3,) unit vector toward the sun
    sun: np.ndarray                # (3,) irradiance of a surface facing the sun (0 at night)
    ambient: np.ndarray            # (3,) sky light on an upward surface
    zenith: np.ndarray             # (3,) sky radiance overhead
    horizon: np.ndarray            # (3,) sky radiance at the horizon
    clouds: float                  # cover, 0..1
    cloud_colour: np.ndarray       # (3,)
    shadows: bool


@dataclass(frozen=True)
class LightConfig:
    """How a task draws a street's lighting; scalars are ranges (lo, hi)."""
    night: bool = False
    sun_elevation_deg: tuple[float, float] = (20.0, 65.0)
    sun_power: tuple[float, float] = (2.5, 3.5)
    clouds: tuple[float, float] = (0.0, 0.8)
    ambient: tuple[float, float, float] = (0.5, 0.58, 0.72)
    zenith: tuple[float, float, float] = (0.1, 0.27, 0.75)
    horizon: tuple[float, float, float] = (0.5, 0.68, 0.9)
    cloud_colour: tuple[float, float, float] = (0.95, 0.95, 0.97)

    def sample(self, rng: np.random.Generator) -> Lighting:
        el = np.radians(rng.uniform(*self.sun_elevation_deg))
        az = rng.uniform(0, 2 * np.pi)
        sun_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        clouds = rng.uniform(*self.clouds)
        if self.night:
            sun = np.zeros(3)
        else:
            # Clouds take light from the sun and give some of it to the sky.
            sun = np.array([1.0, 0.95, 0.86]) * rng.uniform(*self.sun_power) * (1 - 0.6 * clouds)
        lift = 1 + 0.4 * clouds if not self.night else 1.0
        tint = rng.uniform(0.96, 1.04, 3)
        return Lighting(sun_dir, sun, np.asarray(self.ambient) * lift * tint, np.asarray(self.zenith) * tint,
                        np.asarray(self.horizon) * tint, clouds, np.asarray(self.cloud_colour), shadows=not self.night)


def sky(light: Lighting, d: np.ndarray) -> np.ndarray:
    """Sky radiance (n, 3) seen along directions d (n, 3): gradient, clouds, sun glow."""
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    e = dn[:, 2]
    t = np.sqrt(np.clip(e, 0, 1))[:, None]
    col = light.horizon * (1 - t) + light.zenith * t
    col = np.where((e < 0)[:, None], light.horizon * 0.55, col)
    if light.clouds > 0:
        h = 1.0 / (np.maximum(e, 0) + 0.08)          # clouds on a plane overhead, squashed to the horizon
        cover = noise(dn[:, 0] * h, dn[:, 1] * h, 1.5, 17.0) * 0.8 + (light.clouds * 2.2 - 1.2)
        cover = np.clip(cover, 0, 1) * np.clip(e * 8, 0, 1)
        shade = 0.8 + 0.2 * noise(dn[:, 0] * h, dn[:, 1] * h, 0.4, 23.0)
        col = col * (1 - cover[:, None]) + light.cloud_colour * shade[:, None] * cover[:, None]
    if light.sun.any():
        c = dn @ light.sun_dir
        col = col + light.sun[None, :] * (0.6 * np.exp((c - 1) * 400) + 0.04 * np.exp((c - 1) * 10))[:, None]
    return col.astype(np.float32)


@dataclass
class View:
    radiance: np.ndarray     # (H, W, 3) float32, linear
    labels: np.ndarray       # (H, W) uint8
    depth: np.ndarray        # (H, W) float32 true z-depth (m), 0 where nothing was hit


def shade(cast: Casting, pose: Pose, intr: Intrinsics, light: Lighting, lights: list[Light]) -> View:
    H, W = cast.t.shape
    n = H * W
    prims, rays = cast.primitives, cast.rays
    d = np.stack([c.ravel() for c in rays.d], 1)
    t = cast.t.ravel()
    o = rays.origin.astype(np.float32)
    labels = np.full(n, Cls.SKY, np.uint8)
    albedo = np.zeros((n, 3), np.float32)
    normal = np.zeros((n, 3), np.float32)
    reflect = np.zeros(n, np.float32)
    emit = np.zeros((n, 3), np.float32)
    points = np.zeros((n, 3), np.float32)
    for k, idx in pixels_by_primitive(cast.prim).items():
        dk = d[idx]
        p = o + t[idx, None] * dk
        hit = prims[k].surface(p, dk, o)
        # A pixel's footprint grows with depth and, less than in theory, with grazing
        # angle (sharp-looking ground is what cameras deliver).
        cos = np.abs(np.sum(dk * hit.normal, 1)) / np.linalg.norm(dk, axis=1)
        hit.fp = t[idx] / np.float32(intr.fx) / np.sqrt(np.maximum(cos, 0.05))
        paint = prims[k].material(hit)
        labels[idx] = paint.label
        albedo[idx] = paint.albedo
        normal[idx] = hit.normal
        reflect[idx] = paint.reflect
        points[idx] = p
        if paint.emit is not None:
            emit[idx] = paint.emit
    hit = cast.prim.ravel() != NO_HIT

    irr = light.ambient[None, :] * (0.6 + 0.4 * normal[:, 2:3])
    if light.sun.any():
        ndl = np.clip(normal @ light.sun_dir.astype(np.float32), 0, None) * hit
        if light.shadows:
            ndl *= 1 - _shadows(cast, pose, intr, light, points.reshape(H, W, 3), normal.reshape(H, W, 3), ndl.reshape(H, W)).ravel()
        irr = irr + light.sun[None, :] * ndl[:, None]
    if lights:
        # Planar (3, H, W) copies: per-lamp work on image windows stays elementwise.
        irr = np.ascontiguousarray(np.moveaxis(irr.reshape(H, W, 3), -1, 0))
        pts = np.ascontiguousarray(np.moveaxis(points.reshape(H, W, 3), -1, 0))
        nrm = np.ascontiguousarray(np.moveaxis(normal.reshape(H, W, 3), -1, 0))
        near = sorted(lights, key=lambda li: float(np.sum((li.position - pose.position) ** 2)))[:MAX_LAMPS]
        for li in near:
            _add_lamp(irr, li, pts, nrm, pose, intr)
        irr = np.moveaxis(irr, 0, -1).reshape(n, 3)
    rad = (albedo * irr + emit).astype(np.float32)

    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    rad[~hit] = sky(light, d[~hit])
    glass = hit & (reflect > 0) & (np.abs(normal[:, 2]) < UP)
    if glass.any():
        g = np.nonzero(glass)[0]
        r = dn[g] - 2 * np.sum(dn[g] * normal[g], 1, keepdims=True) * normal[g]
        env = sky(light, r)
        rad[g] += reflect[g, None] * (env - rad[g])
    rad = rad.reshape(H, W, 3)
    wet = hit & (reflect > 0) & (normal[:, 2] > UP)
    if wet.any():
        _mirror(rad, wet, dn, reflect, pose, intr, light)
    depth = np.where(hit, t, 0).astype(np.float32).reshape(H, W)
    return View(rad, labels.reshape(H, W), depth)


def _shadows(cast: Casting, pose: Pose, intr: Intrinsics, light: Lighting, points, normal, ndl) -> np.ndarray:
    """Share (H, W) of each pixel hidden from the sun. Each caster's shadow volume (its
    box swept down along the sun to the ground) is projected to a pixel rectangle, and
    only sunlit pixels there are tested, on a grid of every SHADOW_STEP-th pixel whose
    result is then interpolated (soft-edged shadows at a quarter of the cost)."""
    H, W = ndl.shape
    k = SHADOW_STEP
    pts, nrm, lit = points[::k, ::k], normal[::k, ::k], ndl[::k, ::k] > 0
    grid = Intrinsics(intr.fx / k, intr.fy / k, intr.cx / k, intr.cy / k, lit.shape[1], lit.shape[0])
    shadow = np.zeros(lit.shape, bool)
    s = light.sun_dir
    casters = [p for p in cast.primitives[1:] if p.cast_shadow and
               np.hypot(*(0.5 * (p.bounds()[0] + p.bounds()[1]) - pose.position)[:2]) < SHADOW_RANGE]
    if not casters or s[2] <= 0.05:
        return np.zeros((H, W), np.float32)
    lo = np.array([c.bounds()[0] for c in casters])
    hi = np.array([c.bounds()[1] for c in casters])
    sweep = -s[:2] / s[2] * hi[:, 2:3]                 # how far the top's shadow lands on the ground
    lo2 = np.concatenate([np.minimum(lo[:, :2], lo[:, :2] + sweep), np.zeros((len(lo), 1))], 1)
    hi2 = np.concatenate([np.maximum(hi[:, :2], hi[:, :2] + sweep), hi[:, 2:3]], 1)
    for caster, (v0, v1, u0, u1) in zip(casters, screen_rects(lo2, hi2, pose, grid)):
        if v0 >= v1:
            continue
        win = np.s_[v0:v1, u0:u1]
        todo = lit[win] & ~shadow[win]
        if not todo.any():
            continue
        sub = shadow[win]
        sub[todo] = occluded(caster, pts[win][todo] + 0.02 * nrm[win][todo], s)
    soft = cv2.GaussianBlur(shadow.astype(np.float32), (0, 0), 0.8)      # a penumbra, and no stair steps
    return cv2.resize(soft, (W, H), interpolation=cv2.INTER_LINEAR)


def _add_lamp(irr, li: Light, pts, nrm, pose: Pose, intr: Intrinsics) -> None:
    """Add one lamp's light to the irradiance planes (3, H, W) within its range. Lamps
    shine down and sideways: what is above a lamp stays dark."""
    lo, hi = li.position - LAMP_RANGE, li.position + LAMP_RANGE
    lo[2] = 0.0
    v0, v1, u0, u1 = screen_rects(lo[None], hi[None], pose, intr)[0]
    if v0 >= v1:
        return
    win = np.s_[v0:v1, u0:u1]
    lx, ly, lz = (np.float32(c) for c in li.position)
    vx, vy, vz = lx - pts[0][win], ly - pts[1][win], lz - pts[2][win]
    d2 = vx * vx + vy * vy + vz * vz
    inv = 1 / np.sqrt(d2 + 1e-6)
    ndl = np.clip((vx * nrm[0][win] + vy * nrm[1][win] + vz * nrm[2][win]) * inv, 0, None)
    spot = np.clip(vz * inv + 0.15, 0, 1)
    fade = np.clip(1 - d2 / LAMP_RANGE ** 2, 0, 1) ** 2
    w = ndl * spot * fade / (d2 + 0.5)
    for c in range(3):
        irr[c][win] += np.float32(li.colour[c]) * w


def _mirror(rad, wet, dn, reflect, pose: Pose, intr: Intrinsics, light: Lighting) -> None:
    """Wet ground mirrors what is above it: sample the rendered image where the mirrored
    ray points (exact for things far away, which is what puddles show best); the sky
    model fills in where that leaves the frame."""
    H, W = rad.shape[:2]
    idx = np.nonzero(wet)[0]
    r = dn[idx] * np.float32([1, 1, -1])
    cam = r @ pose.rotation.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cam[:, 0] / cam[:, 2] * intr.fx + intr.cx
        v = cam[:, 1] / cam[:, 2] * intr.fy + intr.cy
    inside = (cam[:, 2] > 0.05) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    env = sky(light, r)
    if inside.any():
        # remap wants 2-D maps under 32767 wide: fold the pixel list into rows of 1024.
        n = len(idx)
        rows = -(-n // 1024)
        mx = np.zeros(rows * 1024, np.float32)
        my = np.zeros(rows * 1024, np.float32)
        mx[:n] = np.where(inside, u, 0)
        my[:n] = np.where(inside, v, 0)
        sampled = cv2.remap(rad, mx.reshape(rows, 1024), my.reshape(rows, 1024), cv2.INTER_LINEAR).reshape(-1, 3)[:n]
        env[inside] = sampled[inside]
    grazing = 1 - np.abs(dn[idx, 2])
    f = reflect[idx] * (0.3 + 0.7 * grazing ** 3)
    flat = rad.reshape(-1, 3)
    flat[idx] += f[:, None] * (env - flat[idx])

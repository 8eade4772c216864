"""Procedural textures on world-scale texture coordinates (metres).

Everything samples two fixed 512 x 512 tiles: tileable fractal noise (spectral
synthesis, so it wraps without seams) and per-cell white noise (per brick / paving
slab tints). Several samples at incommensurate scales hide the tiling. A texture is
a `Tex` value: kind, sRGB base colour(s) and an offset that makes instances differ.
Albedos are linear RGB in [0, 1].

Textures are filtered by the pixel footprint `fp` (metres a pixel covers there):
detail finer than a pixel fades to its average instead of aliasing into moire
(brick mortar on a far facade becomes a tint, not a flicker of lines).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TILE = 512
_MASK = TILE - 1


@lru_cache(maxsize=1)
def _tiles() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240611)      # fixed: textures are part of the generator, not the seed
    f = np.fft.fftfreq(TILE)
    r = np.hypot(f[:, None], f[None, :])
    r[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((TILE, TILE))) / r ** 1.6
    spectrum[0, 0] = 0
    fbm = np.real(np.fft.ifft2(spectrum))
    fbm = (fbm - fbm.mean()) / fbm.std()
    return fbm.astype(np.float32), rng.random((TILE, TILE)).astype(np.float32)


def srgb_to_linear(c) -> np.ndarray:
    return (np.asarray(c, np.float32) / 255.0) ** 2.2


def noise(u: np.ndarray, v: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """Fractal noise (zero mean, unit std) with features of about `scale` metres, bilinear."""
    fbm = _tiles()[0]
    x = u * np.float32(16.0 / scale) + offset
    y = v * np.float32(16.0 / scale) + offset * 1.618
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    i0, j0 = x0.astype(np.int64) & _MASK, y0.astype(np.int64) & _MASK
    i1, j1 = (i0 + 1) & _MASK, (j0 + 1) & _MASK
    top = fbm[j0, i0] * (1 - fx) + fbm[j0, i1] * fx
    bot = fbm[j1, i0] * (1 - fx) + fbm[j1, i1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32, copy=False)


def detail(scale: float, fp: np.ndarray) -> np.ndarray:
    """How much of a feature of `scale` metres survives a pixel footprint fp (1: all)."""
    return np.clip(scale / (3 * fp), 0, 1)


def cell_random(i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
    """A uniform [0, 1) value per integer cell (i, j)."""
    white = _tiles()[1]
    return white[(j.astype(np.int64) * 7 + salt) & _MASK, (i.astype(np.int64) * 13 + salt * 3) & _MASK]


def _grid(u, v, w, h, stagger: bool):
    """Cell index and position inside (0..w, 0..h) of a running-bond or straight grid."""
    j = np.floor(v / h)
    if stagger:
        u = u + (j % 2) * (w / 2)
    i = np.floor(u / w)
    return i, j, u - i * w, v - j * h


def _joints(x, y, w, h, width, fp):
    """Weight of joint colour: sharp lines near, their area share where pixels outgrow them."""
    line = (np.minimum(x, w - x) < width / 2) | (np.minimum(y, h - y) < width / 2)
    k = np.clip(width / fp, 0, 1)
    share = width / w + width / h
    return k * line + (1 - k) * share


@dataclass(frozen=True)
class Tex:
    kind: str
    colour: tuple[float, float, float]              # sRGB 0..255
    colour2: tuple[float, float, float] = (0, 0, 0)  # mortar, joints, flowers, dry grass
    size: tuple[float, float] = (0.5, 0.5)          # slab / brick / panel size (m)
    offset: float = 0.0

    def __call__(self, uv: np.ndarray, fp: np.ndarray) -> np.ndarray:
        return _KINDS[self.kind](self, uv[:, 0], uv[:, 1], fp)


def _tint(base, f):
    return np.clip(srgb_to_linear(base)[None, :] * f[:, None], 0, 1)


def _mix(a, b, w):
    return a + (b - a) * w[:, None]


def _asphalt(t, u, v, fp):
    o = t.offset
    grain = 1 + 0.22 * detail(0.02, fp) * noise(u, v, 0.02, o) + 0.1 * detail(0.13, fp) * noise(u, v, 0.13, o + 5)
    out = _tint(t.colour, grain * (1 + 0.12 * noise(u, v, 3.0, o + 9)))
    stones = np.clip(noise(u, v, 0.015, o + 3) - 2.0, 0, 1) * detail(0.015, fp)    # light aggregate specks
    return _mix(out, np.full_like(out, 0.3), stones)


def _paving(t, u, v, fp):
    o = t.offset
    w, h = t.size
    i, j, x, y = _grid(u + o, v, w, h, stagger=w != h)
    slab = 1 + (0.3 * cell_random(i, j, 1) - 0.15) * detail(min(w, h), fp)
    grain = 1 + 0.12 * detail(0.03, fp) * noise(u, v, 0.03, o) + 0.08 * noise(u, v, 0.7, o + 2)
    out = _tint(t.colour, slab * grain)
    return _mix(out, srgb_to_linear(t.colour2)[None, :], _joints(x, y, w, h, 0.012, fp))


def _bricks(t, u, v, fp):
    o = t.offset
    w, h = t.size
    i, j, x, y = _grid(u + o, v, w, h, stagger=True)
    brick = 1 + (0.5 * cell_random(i, j, 2) - 0.25) * detail(h, fp)
    out = _tint(t.colour, brick * (1 + 0.1 * noise(u, v, 0.5, o)))
    return _mix(out, srgb_to_linear(t.colour2)[None, :], _joints(x, y, w, h, 0.012, fp))


def _plaster(t, u, v, fp):
    o = t.offset
    stains = 1 - 0.12 * np.clip(noise(u * 4, v * 0.5, 2.0, o), 0, 3)  # rain streaks run down
    return _tint(t.colour, (1 + 0.05 * noise(u, v, 0.4, o + 1) + 0.04 * detail(0.02, fp) * noise(u, v, 0.02, o)) * stains)


def _concrete(t, u, v, fp):
    o = t.offset
    w, h = t.size
    _, _, x, y = _grid(u + o, v, w, h, stagger=False)
    seams = 1 - 0.2 * _joints(x, y, w, h, 0.02, fp)
    return _tint(t.colour, seams * (1 + 0.1 * noise(u, v, 0.6, o) + 0.08 * detail(0.03, fp) * noise(u, v, 0.03, o + 4)))


def _grass(t, u, v, fp):
    o = t.offset
    dry = np.clip(0.3 + 0.4 * noise(u, v, 2.0, o), 0, 1)
    base = _mix(np.repeat(srgb_to_linear(t.colour)[None, :], len(u), 0), srgb_to_linear(t.colour2)[None, :], dry)
    blades = 1 + 0.35 * detail(0.015, fp) * noise(u, v, 0.015, o + 7) + 0.15 * noise(u, v, 0.2, o + 8)
    return np.clip(base * blades[:, None], 0, 1)


def _foliage(t, u, v, fp):
    o = t.offset
    leaves = noise(u, v, 0.12, o) + 0.5 * detail(0.03, fp) * noise(u, v, 0.03, o + 3)
    light = np.clip(1 + 0.45 * leaves, 0.25, 1.8)
    hue = np.clip(0.5 + 0.4 * noise(u, v, 1.5, o + 6), 0, 1)
    base = _mix(np.repeat(srgb_to_linear(t.colour)[None, :], len(u), 0), srgb_to_linear(t.colour2)[None, :], hue)
    return np.clip(base * light[:, None], 0, 1)


def _flowers(t, u, v, fp):
    """Soil (colour) with leafy plants and flowers of colour2."""
    o = t.offset
    soil = _tint(t.colour, 1 + 0.2 * noise(u, v, 0.05, o))
    plants = noise(u, v, 0.25, o + 2) + 0.6 * noise(u, v, 0.04, o + 3) > -0.2
    leaf = _tint((60, 105, 40), 1 + 0.35 * noise(u, v, 0.03, o + 4))
    blossom = noise(u, v, 0.05, o + 5) > 1.1
    out = np.where(plants[:, None], leaf, soil)
    return np.where((plants & blossom)[:, None], srgb_to_linear(t.colour2)[None, :], out)


def _smooth(t, u, v, fp):
    """Paint, metal, plastic, fabric: a flat colour with a faint mottle."""
    return _tint(t.colour, 1 + 0.05 * noise(u, v, 0.3, t.offset) + 0.03 * detail(0.02, fp) * noise(u, v, 0.02, t.offset + 1))


def _bark(t, u, v, fp):
    return _tint(t.colour, 1 + 0.3 * noise(u * 6, v * 0.5, 0.3, t.offset))


_KINDS = {"asphalt": _asphalt, "paving": _paving, "bricks": _bricks, "plaster": _plaster,
          "concrete": _concrete, "grass": _grass, "foliage": _foliage, "flowers": _flowers,
          "smooth": _smooth, "bark": _bark}

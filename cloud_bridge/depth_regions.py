"""Weights-free class-agnostic masks from an RGB-D frame: colour superpixels merged into
surfaces where the depth says they are one.

Colour segments (felzenszwalb, SLIC) follow brightness edges, so on a dim, noisy frame
they either fragment into noise or, made coarse enough to survive it, run across object
boundaries that are dark on both sides. A depth camera does not care about the light,
and a surface has a simple form in it: on a plane, inverse depth is an affine function
of the pixel coordinates (1/z = a u + b v + c). So:

  1. over-segment the denoised colour image, stacked with the inverse depth, into small
     superpixels (felzenszwalb at a small scale): they respect the edges colour can see
     and every depth jump, since inverse depth changes slowly along a surface (at most
     one focal length's worth per pixel on the ground) and steps at an occluding edge;
  2. fit the plane 1/z = a u + b v + c to each superpixel's depth returns;
  3. for each pair of touching superpixels, measure whether they are one surface: where
     they meet, do their two planes predict the same inverse depth (no jump, relative
     error `jump_tolerance`) and face the same way (no crease, `crease_deg`)? and how
     different are their mean colours (CIELAB)?
  4. merge pairs that are one surface and whose colours differ by less than
     `colour_tolerance` (loosened as the frame gets darker and noisier: the noise sigma is
     estimated from the image itself, so colour counts for less where it means less);
     superpixels without enough depth returns (sky, holes) merge by colour alone, among
     themselves.

A curb is a jump of 10-15 cm in the height of the ground, which at a dog's camera
height is a large relative change of the ground plane's inverse depth: road and
sidewalk of the same grey stay apart. A door in a wall is the same plane and is kept
apart by its colour; an object in front of a wall is a jump whatever its colour.
Frames without depth get the colour superpixels merged by colour alone.

Camera intrinsics are not in a hard frame; the normals need only the focal length,
taken from the camera's horizontal field of view (`hfov_deg`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from seg_core import ConfigError

from .fusion import MaskSet
from .mask_generators import MaskGenerator, _check_rgb

__all__ = ["DepthRegionConfig", "DepthRegionGenerator", "noise_sigma", "surface_regions"]


@dataclass(frozen=True)
class DepthRegionConfig:
    """Sizes in pixels at 640 px image width (scaled with the image).

    Chosen on a development split of generated dim frames (its own streets, not the val
    or test frames of any task the main job scores)."""
    superpixel_scale: float = 50.0     # felzenszwalb scale on a 0..1 image: smaller -> more superpixels
    superpixel_sigma: float = 0.8
    superpixel_min_size: int = 40
    inverse_depth_weight: float = 2.0  # metres x this, per unit of 0..1 colour, in the superpixels
    jump_tolerance: float = 0.08       # relative inverse-depth disagreement where two superpixels meet
    crease_deg: float = 20.0           # angle between their planes' normals
    colour_tolerance: float = 14.0     # CIELAB distance of mean colours, at full colour trust
    noise_scale: float = 6.0           # colour trust 1 / (1 + (noise sigma / noise_scale)^2)
    min_colour_trust: float = 0.35
    min_depth_fraction: float = 0.3    # superpixels with fewer returns count as "no depth" (sky, holes)
    min_plane_px: int = 24             # returns needed to fit a superpixel's plane (fewer: depth only)
    hfov_deg: float = 55.0             # the camera's horizontal field of view
    min_area: int = 64                 # smaller masks are left uncovered (the evidence's own labels stay)

    def __post_init__(self):
        if self.superpixel_scale <= 0 or self.superpixel_min_size < 1 or self.min_area < 1:
            raise ConfigError("depth regions: superpixel_scale > 0, superpixel_min_size >= 1, min_area >= 1 needed")
        for name in ("superpixel_sigma", "jump_tolerance", "crease_deg", "colour_tolerance", "noise_scale",
                     "min_colour_trust", "min_depth_fraction"):
            if getattr(self, name) < 0:
                raise ConfigError(f"depth regions: {name} must be >= 0, got {getattr(self, name)}")
        if not 1.0 <= self.hfov_deg < 180.0:
            raise ConfigError(f"depth regions: hfov_deg must be in [1, 180), got {self.hfov_deg}")


MIN_SUPERPIXEL = 12   # pixels: enough to say something about a superpixel's depth and colour


def noise_sigma(grey: np.ndarray) -> float:
    """Robust estimate of additive noise (sigma, grey levels): the median absolute
    response of Immerkaer's Laplacian-difference operator (edges are sparse, noise is
    everywhere)."""
    g = grey.astype(np.float32)
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(g, -1, k, borderType=cv2.BORDER_REFLECT)
    return float(np.median(np.abs(r)) * 1.4826 / 6.0)


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _filled_inverse_depth(depth_m: np.ndarray, radius: int) -> np.ndarray:
    """1/depth (1/m), 0 without a return; holes up to `radius` pixels filled from the
    nearest return, so sensor dropouts do not cut surfaces into pieces."""
    valid = np.isfinite(depth_m) & (depth_m > 0)
    inv = np.where(valid, 1.0 / np.where(valid, depth_m, 1.0), 0.0).astype(np.float32)
    if valid.all() or not valid.any():
        return inv
    dist, nearest = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(valid)   # label k is the k-th valid pixel in raster order
    src = np.zeros(int(nearest.max()) + 1, np.float32)
    src[1:len(ys) + 1] = inv[ys, xs]
    fill = (~valid) & (dist <= radius)
    inv[fill] = src[nearest[fill]]
    return inv


def _touching(sp: np.ndarray):
    """Boundary pixel pairs between different superpixels: (a, b, i, j) arrays with
    a < b and i, j the flat indices of the two pixels (a horizontal or vertical pair)."""
    h, w = sp.shape
    idx = np.arange(h * w).reshape(h, w)
    out = []
    for a, b, ia, ib in ((sp[:, :-1], sp[:, 1:], idx[:, :-1], idx[:, 1:]),
                         (sp[:-1, :], sp[1:, :], idx[:-1, :], idx[1:, :])):
        m = a != b
        out.append((np.minimum(a[m], b[m]), np.maximum(a[m], b[m]), ia[m], ib[m]))
    return tuple(np.concatenate(parts) for parts in zip(*out))


def _surface_merges(depth_m, inv_depth, sp, count, a, b, ia, ib, pairs, inverse, colour_ok, cfg) -> np.ndarray:
    """Which touching superpixel pairs (pairs = a * n + b) are one surface of one colour."""
    h, w = sp.shape
    n = len(count)
    pa, pb = pairs // n, pairs % n
    flat = sp.ravel()
    f = (w / 2.0) / np.tan(np.radians(cfg.hfov_deg) / 2.0)
    valid = (np.isfinite(depth_m) & (depth_m > 0)).ravel()
    inv = inv_depth.ravel().astype(np.float64)
    returns = np.bincount(flat[valid], minlength=n)
    has_depth = returns >= np.maximum(cfg.min_depth_fraction * count, 1)
    has_plane = has_depth & (returns >= cfg.min_plane_px)
    u = (np.tile(np.arange(w), h) - (w - 1) / 2.0) / f
    v = (np.repeat(np.arange(h), w) - (h - 1) / 2.0) / f
    sv, cols = flat[valid], [u[valid], v[valid], np.ones(int(valid.sum()))]
    ata, atb = np.empty((n, 3, 3)), np.empty((n, 3))
    for i in range(3):
        atb[:, i] = np.bincount(sv, cols[i] * inv[valid], n)
        for j in range(i, 3):
            ata[:, i, j] = ata[:, j, i] = np.bincount(sv, cols[i] * cols[j], n)
    planes = np.zeros((n, 3))
    planes[has_plane] = np.linalg.solve(ata[has_plane] + 1e-6 * np.eye(3), atb[has_plane][..., None])[..., 0]

    def rel(x, y):
        return np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-6)
    count_pairs = np.bincount(inverse, minlength=len(pairs))
    # Where they meet: do the two planes predict the same inverse depth?
    pu, pv = u[ia], v[ia]
    plane_jump = np.bincount(inverse, rel(planes[a, 0] * pu + planes[a, 1] * pv + planes[a, 2],
                                          planes[b, 0] * pu + planes[b, 1] * pv + planes[b, 2]), len(pairs)) / count_pairs
    # Without a plane on one side: are the measured depths on the two sides of the boundary close?
    pixel_jump = np.bincount(inverse, rel(inv[ia], inv[ib]), len(pairs)) / count_pairs
    normals = planes / np.maximum(np.linalg.norm(planes, axis=1, keepdims=True), 1e-12)
    cos = np.abs(np.sum(normals[pa] * normals[pb], axis=1))
    both_planes = has_plane[pa] & has_plane[pb]
    one_surface = np.where(both_planes,
                           (plane_jump < cfg.jump_tolerance) & (cos > np.cos(np.radians(cfg.crease_deg))),
                           pixel_jump < cfg.jump_tolerance)
    both_depth = has_depth[pa] & has_depth[pb]
    neither = ~has_depth[pa] & ~has_depth[pb]
    return (both_depth & one_surface & colour_ok) | (neither & colour_ok)


def surface_regions(rgb: np.ndarray, depth_m: np.ndarray | None, cfg: DepthRegionConfig) -> np.ndarray:
    """(H, W) int64 region ids (see the module doc)."""
    from skimage.segmentation import felzenszwalb

    h, w = rgb.shape[:2]
    px = w / 640.0
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sigma_n = noise_sigma(grey)
    trust = max(cfg.min_colour_trust, 1.0 / (1.0 + (sigma_n / cfg.noise_scale) ** 2))
    # Denoise in proportion to the noise before anything looks at colour.
    smooth = cv2.GaussianBlur(rgb, (0, 0), max(0.5, 0.3 * sigma_n) * px) if sigma_n > 1.0 else rgb
    feats = smooth.astype(np.float32) / 255.0
    inv_depth = None
    if depth_m is not None:
        inv_depth = _filled_inverse_depth(depth_m, max(1, int(round(6 * px))))
        # Inverse depth per pixel step on the ground is about 1 / (camera height x focal
        # length): scaled to the image width, so the weight means the same at any size.
        feats = np.concatenate([feats, (inv_depth * cfg.inverse_depth_weight * px)[..., None]], -1)
    with warnings.catch_warnings():   # "third dimension of 4": colour + depth, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        sp = felzenszwalb(feats, scale=cfg.superpixel_scale, sigma=cfg.superpixel_sigma,
                          min_size=max(MIN_SUPERPIXEL, int(cfg.superpixel_min_size * px * px)),
                          channel_axis=-1).astype(np.int64)
    n = int(sp.max()) + 1
    flat = sp.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    lab[:, 0] *= 100.0 / 255.0           # OpenCV's 8-bit Lab: L in 0..255, a and b offset by 128
    lab[:, 1:] -= 128.0
    mean_lab = np.stack([np.bincount(flat, lab[:, k], n) for k in range(3)], 1) / count[:, None]

    a, b, ia, ib = _touching(sp)
    if len(a) == 0:
        return sp
    pairs, inverse = np.unique(a * n + b, return_inverse=True)
    pa, pb = pairs // n, pairs % n
    colour_ok = np.linalg.norm(mean_lab[pa] - mean_lab[pb], axis=1) < cfg.colour_tolerance / trust
    if depth_m is None:
        merge = colour_ok
    else:
        merge = _surface_merges(depth_m, inv_depth, sp, count, a, b, ia, ib, pairs, inverse, colour_ok, cfg)
    parent = np.arange(n)
    for i, j in zip(pa[merge], pb[merge]):
        ri, rj = _find(parent, int(i)), _find(parent, int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([_find(parent, i) for i in range(n)])
    return roots[sp]


class DepthRegionGenerator(MaskGenerator):
    """Masks of an RGB-D frame (see the module doc); RGB-only frames get colour merging."""

    def __init__(self, config: DepthRegionConfig = DepthRegionConfig()):
        self.config = config
        self.name = "depth_regions"

    def generate(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> MaskSet:
        rgb = _check_rgb(rgb)
        if depth_m is not None and np.shape(depth_m) != rgb.shape[:2]:
            raise ValueError(f"depth is {np.shape(depth_m)} but the image is {rgb.shape[:2]} (H, W)")
        area = rgb.shape[0] * rgb.shape[1] / (480.0 * 640.0)
        regions = surface_regions(rgb, depth_m, self.config)
        return MaskSet.from_label_image(regions, min_area=max(1, int(self.config.min_area * area)))

    def masks(self, frame) -> MaskSet:
        return self.generate(frame.rgb, frame.depth_m)

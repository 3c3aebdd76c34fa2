"""Registration pairs with a known answer made from a real scan: the scan is the fixed image, and a moving image is
the same anatomy in another posture, field of view and resolution, as a CT or as an MR-like image made from its
labels.

The phantom's own studies are one family of made-up anatomy; a registration tuned on them alone did not carry over
to other anatomy. Here the anatomy is a real patient's (the vendored real CT and its multi-organ labels,
`datasets/real`). The moving session's posture is drawn as the phantom draws one (`sirtjax.phantom.deform`: a
rotation of a few degrees, scaling, translation, a breathing field around the liver damped at the spine, and
smooth posture bumps), with the real scan's frame as the canonical one, so the true displacement of every fixed
voxel is known: a fixed point p maps to the moving point ``to_world(posture, p)``.

A moving image is rendered on its own grid (identity direction, ``spacing_mm``, a field of view around the liver
cut to ``fov_z_mm`` along z) by reading the source through the inverse posture, after smoothing it along z by the
slice profile (a Gaussian of FWHM the moving slice thickness). Its source is the CT itself (``kind='ct'``) or an
MR-like image made from the CT's labels (``kind='mr'``): one random intensity per tissue of
`sirtjax.train.anatomy.tissue_codes` (fat bright or not, the liver anywhere between its neighbours), the CT's own
texture within each tissue, a smooth multiplicative bias field and Rician noise.

Landmarks for RMSD (thesis 5.3.4) are the compact organs and vertebrae of the labels (label id 2 and up, in
:data:`LANDMARK_CLASSES` order, those of at least ``MIN_LANDMARK_ML``) that the moving field of view shows whole; the
liver is label 1. Approximate: the slice
profile follows the fixed grid's z, which the posture tilts by a few degrees; a real MR has contrasts within organs
that one intensity per tissue does not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from sirtjax.phantom.config import PhantomConfig
from sirtjax.phantom.deform import sample_posture, to_canonical, to_world
from sirtjax.phantom.mr_like import _rician
from sirtjax.volume import Volume, centroid_mm, index_to_world, make_volume, world_to_index

# TotalSegmentator classes used as landmarks: spleen, kidneys, gallbladder, pancreas, adrenals, vertebrae S1-T9
LANDMARK_CLASSES = (1, 2, 3, 4, 7, 8, 9, *range(26, 36))
MIN_LANDMARK_ML = 2.0
LIVER_CLASS = 5
AIR_HU = -1000.0


@dataclasses.dataclass(frozen=True)
class RealPair:
    """A registration pair with its answer: images, label maps (liver 1, landmarks >= 2), liver masks, and the true
    displacement on the fixed grid (z, y, x, 3) mm, ITK convention."""

    fixed: Volume
    moving: Volume
    fixed_labels: Volume
    moving_labels: Volume
    fixed_liver: Volume
    moving_liver: Volume
    true_displacement: Volume
    kind: str


def landmark_labels(labels: Volume) -> Volume:
    """Liver 1 and each landmark organ of LANDMARK_CLASSES its own id from 2 (uint8), from TotalSegmentator labels."""
    lab = np.asarray(labels.array)
    out = (lab == LIVER_CLASS).astype(np.uint8)
    voxel_ml = float(np.prod(np.asarray(labels.spacing_mm))) / 1000.0
    next_id = 2
    for cls in LANDMARK_CLASSES:
        organ = lab == cls
        if organ.sum() * voxel_ml >= MIN_LANDMARK_ML:
            out[organ] = next_id
            next_id += 1
    return labels.with_array(out)


def draw_posture(labels: Volume, rng: np.random.Generator, config: PhantomConfig = PhantomConfig()) -> dict:
    """A posture drawn as the phantom draws a session's, around this scan's liver and spine."""
    lab = np.asarray(labels.array)
    spine = np.isin(lab, range(25, 51))
    spine_xy = centroid_mm(labels, spine)[:2] if spine.any() else centroid_mm(labels, lab > 0)[:2]
    anat = {"liver": {"right": {"center": centroid_mm(labels, lab == LIVER_CLASS).tolist()}},
            "spine": {"x": float(spine_xy[0]), "y": float(spine_xy[1])}}
    return sample_posture(rng, config, anat)


def mr_like_from_labels(ct: Volume, labels: Volume, rng: np.random.Generator, *, bias_max: float = 0.3,
                        noise_fraction: float = 0.03) -> Volume:
    """An MR-like image of a CT's anatomy: one random intensity per tissue (`sirtjax.train.anatomy.tissue_codes`),
    the CT's texture within each tissue, a smooth bias field and Rician noise (see the module docstring)."""
    from sirtjax.train.anatomy import tissue_codes
    from sirtjax.train.label_maps import N_CODES

    hu = np.asarray(ct.array, np.float32)
    codes = tissue_codes(np.asarray(labels.array).astype(np.int32), "totalsegmentator", hu, "ct")
    means = rng.uniform(80.0, 1000.0, N_CODES).astype(np.float32)
    means[0] = rng.uniform(0.0, 30.0)  # air is dark in every sequence
    median = ndimage.median(hu, codes, index=np.arange(N_CODES))
    texture = (hu - np.nan_to_num(np.asarray(median, np.float32))[codes]) * np.float32(rng.uniform(0.5, 2.0))
    image = np.maximum(means[codes] + np.clip(texture, -100.0, 100.0), 0.0)
    coarse = rng.normal(0.0, rng.uniform(0.0, bias_max), (4, 4, 4))
    bias = np.exp(ndimage.zoom(coarse, np.asarray(image.shape) / 4.0, order=3, mode="nearest"))[tuple(slice(0, n) for n in image.shape)]
    return ct.with_array(_rician(image * bias, noise_fraction * float(image.max()), rng))


def moving_grid(fixed: Volume, liver: np.ndarray, spacing_mm: tuple[float, float, float], fov_z_mm: float,
                posture: dict, rng: np.random.Generator) -> Volume:
    """An empty moving grid (identity direction) around the posture's image of the fixed scan, its z extent cut to
    fov_z_mm at a random place that keeps at least half the liver in view."""
    nz, ny, nx = fixed.shape
    corners = np.array([[i, j, k, 1.0] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)])
    world = to_world(posture, (corners @ index_to_world(fixed).T)[:, :3]).astype(np.float64)
    lo, hi = world.min(axis=0), world.max(axis=0)
    liver_z = to_world(posture, np.argwhere(liver)[:, ::-1] @ (np.asarray(fixed.direction) * np.asarray(fixed.spacing_mm)).T
                       + np.asarray(fixed.origin_mm))[:, 2]
    z_mid = float(np.median(liver_z)) + rng.uniform(-0.25, 0.25) * fov_z_mm
    lo[2], hi[2] = max(lo[2], z_mid - fov_z_mm / 2), min(hi[2], z_mid + fov_z_mm / 2)
    spacing = np.asarray(spacing_mm, np.float64)
    size = np.maximum(1, np.floor((hi - lo) / spacing).astype(int) + 1)
    return make_volume(np.zeros(size[::-1], np.float32), spacing, lo, np.eye(3))


def _read_through(source: np.ndarray, source_vol: Volume, points_mm: np.ndarray, order: int, outside: float) -> np.ndarray:
    """Samples of a source array at world points (..., 3), trilinear (order 1) or nearest (order 0)."""
    idx = (np.c_[points_mm.reshape(-1, 3), np.ones(points_mm[..., 0].size)] @ world_to_index(source_vol).T)[:, :3]
    out = ndimage.map_coordinates(source, idx[:, ::-1].T, order=order, mode="constant", cval=outside)
    return out.reshape(points_mm.shape[:-1])


def real_pair(ct: Volume, labels: Volume, *, seed: int, kind: str = "ct", spacing_mm: tuple[float, float, float] = (1.5, 1.5, 5.0),
              fov_z_mm: float = 240.0) -> RealPair:
    """A pair with a known answer from a real CT and its TotalSegmentator labels (see the module docstring)."""
    if kind not in ("ct", "mr"):
        raise ValueError(f"kind must be 'ct' or 'mr', got {kind!r}")
    rng = np.random.default_rng(seed)
    fixed_labels = landmark_labels(labels)
    liver = np.asarray(fixed_labels.array) == 1
    posture = draw_posture(labels, rng)
    source = np.asarray((mr_like_from_labels(ct, labels, rng) if kind == "mr" else ct).array, np.float32)
    outside = 0.0 if kind == "mr" else AIR_HU
    sigma_z_vox = spacing_mm[2] / 2.355 / float(ct.spacing_mm[2])
    source = ndimage.gaussian_filter1d(source, sigma_z_vox, axis=0, mode="nearest") if sigma_z_vox > 0.3 else source
    grid = moving_grid(ct, liver, spacing_mm, fov_z_mm, posture, rng)
    nz, ny, nx = grid.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    points = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(np.float64) @ index_to_world(grid).T
    back = to_canonical(posture, points[:, :3]).reshape(nz, ny, nx, 3)
    moving = grid.with_array(_read_through(source, ct, back, 1, outside).astype(np.float32))
    moving_labels = grid.with_array(_read_through(np.asarray(fixed_labels.array), ct, back, 0, 0).astype(np.uint8))
    fz, fy, fx = ct.shape
    k, j, i = np.meshgrid(np.arange(fz), np.arange(fy), np.arange(fx), indexing="ij")
    fixed_points = (np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(np.float64) @ index_to_world(ct).T)[:, :3]
    u = (to_world(posture, fixed_points) - fixed_points).reshape(fz, fy, fx, 3).astype(np.float32)
    true = make_volume(u, ct.spacing_mm, ct.origin_mm, ct.direction)
    fixed_labels, moving_labels = _landmarks_in_view(fixed_labels, moving_labels, fixed_points + u.reshape(-1, 3), grid)
    as_liver = lambda v: v.with_array((np.asarray(v.array) == 1).astype(np.uint8))  # noqa: E731
    return RealPair(ct, moving, fixed_labels, moving_labels, as_liver(fixed_labels), as_liver(moving_labels), true, kind)


def _landmarks_in_view(fixed_labels: Volume, moving_labels: Volume, mapped_mm: np.ndarray, grid: Volume) -> tuple[Volume, Volume]:
    """Both label maps without the landmarks that the moving field of view cuts (a fixed voxel of theirs maps outside
    the moving grid): a cut organ's centre moves with the cut, not with the registration."""
    idx = (np.c_[mapped_mm, np.ones(len(mapped_mm))] @ world_to_index(grid).T)[:, :3]
    inside = np.all((idx > -0.5) & (idx < np.asarray(grid.shape)[::-1] - 0.5), axis=1).reshape(fixed_labels.shape)
    fixed = np.asarray(fixed_labels.array)
    cut = [i for i in np.unique(fixed[~inside]) if i >= 2]
    strip = lambda a: np.where(np.isin(a, cut), 0, a).astype(np.uint8)  # noqa: E731
    return fixed_labels.with_array(strip(fixed)), moving_labels.with_array(strip(np.asarray(moving_labels.array)))

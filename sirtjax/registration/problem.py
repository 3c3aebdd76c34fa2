"""One registration problem at one pyramid level, and the similarity terms evaluated on it.

A :class:`LevelData` holds everything a jit-compiled step needs for one pair at one resolution, as
a pytree of arrays (so pairs of equal shape stack along a leading axis and vmap): the fixed
channels ``(z, y, x, 1 + C)`` (image, then C segmentation channels: a liver mask or one-hot label
classes), the moving channels ``(z', y', x', 1 + C)`` on the moving level grid, the fixed-sample
weights for the image term (1 everywhere, or a region of interest), the intensity ranges that
define the MI bins, the stiffness map and the affine (the non-rigid stage's starting point).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration.mi import mattes_mi
from sirtjax.registration.pyramid import pyramid_level
from sirtjax.registration.similarity import overlap_ssd, ssd
from sirtjax.registration.warp import AffineTransform, identity_affine, sample_channels
from sirtjax.volume import Volume, make_volume


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LevelData:
    """Arrays of one pair at one level (see module docstring); every field is a pytree leaf."""

    fixed: Volume
    moving: Volume
    image_weight: jax.Array
    fixed_range: jax.Array
    moving_range: jax.Array
    stiffness: jax.Array
    affine: AffineTransform
    radius_mm: jax.Array


@dataclasses.dataclass(frozen=True)
class SimilarityOptions:
    """Static choices of the similarity terms: metric 'mi' or 'ssd', MI bins, fixed Parzen order, sampling.

    ``image_samples``: the image term uses that many voxels drawn at random (fresh each step) when
    the level has more ROI voxels than that; None uses every voxel.
    """

    metric: str = "mi"
    bins: int = 32
    fixed_parzen_order: int = 0
    image_samples: int | None = None


def stack_channels(image: Volume, seg: np.ndarray | None) -> Volume:
    """Image (z, y, x) and optional segmentation channels (z, y, x, C) as one (z, y, x, 1 + C) float32 Volume."""
    img = np.asarray(image.array, np.float32)[..., None]
    arr = img if seg is None or seg.shape[-1] == 0 else np.concatenate([img, np.asarray(seg, np.float32)], axis=-1)
    return make_volume(arr, image.spacing_mm, image.origin_mm, image.direction)


def make_level(
    fixed_stack: Volume,
    moving_stack: Volume,
    resolution_mm: float,
    *,
    stiffness_inside: float = 1.0,
    image_roi: np.ndarray | None = None,
) -> LevelData:
    """LevelData at a pyramid resolution (mm) from stacked fixed and moving channels (host).

    The stiffness map is ``1 + (stiffness_inside - 1) * liver`` with the liver taken from the fixed
    segmentation's first channel (uniform 1 without segmentation). ``image_roi`` (fixed grid, 0/1)
    restricts the image-term samples; None uses every voxel.
    """
    f = pyramid_level(fixed_stack, resolution_mm)
    m = pyramid_level(moving_stack, resolution_mm)
    if image_roi is None:
        roi = None
    else:
        roi = jnp.asarray(pyramid_level(fixed_stack.with_array(np.asarray(image_roi, np.float32)), resolution_mm).array)
    weight, fixed_range, moving_range, stiffness = _level_arrays(
        jnp.asarray(f.array), jnp.asarray(m.array), roi, jnp.float32(stiffness_inside))
    return LevelData(
        fixed=_as_f32(f), moving=_as_f32(m), image_weight=weight, fixed_range=fixed_range,
        moving_range=moving_range, stiffness=stiffness, affine=identity_affine(),
        radius_mm=jnp.asarray(1.0, jnp.float32),
    )


@jax.jit
def _level_arrays(farr: jax.Array, marr: jax.Array, roi: jax.Array | None, stiffness_inside: jax.Array):
    """Image-term weights, fixed/moving intensity ranges and the stiffness map of one level (one program)."""
    weight = jnp.ones(farr.shape[:3], jnp.float32) if roi is None else (roi > 0.5).astype(jnp.float32)
    liver = farr[..., 1] if farr.shape[-1] > 1 else jnp.zeros(farr.shape[:3], jnp.float32)
    stiffness = 1.0 + (stiffness_inside - 1.0) * liver
    sel = jnp.where(weight > 0, farr[..., 0], jnp.nan)
    fixed_range = jnp.stack([jnp.nanmin(sel), jnp.nanmax(sel)])
    moving_range = jnp.stack([jnp.min(marr[..., 0]), jnp.max(marr[..., 0])])
    return weight, fixed_range, moving_range, stiffness


def _as_f32(vol: Volume) -> Volume:
    return Volume(*(jnp.asarray(getattr(vol, f.name), jnp.float32) for f in dataclasses.fields(Volume)))


def similarity_terms(
    data: LevelData, moving_points_mm: jax.Array, key: jax.Array, opts: SimilarityOptions, *, image: bool, seg: bool
) -> dict[str, jax.Array]:
    """Similarity terms for the transformed fixed-grid points (z, y, x, 3) (moving world mm).

    ``image``: the image term (-MI in nats, or SSD), on every voxel of the ROI or, when the grid has
    more than ``image_samples`` voxels, on that many drawn uniformly at random (with replacement) from the
    grid with ``key`` (one fresh key per step gives a fresh draw), the draws outside the ROI weighing 0
    (so a small ROI gets proportionally fewer effective samples); samples mapped outside the moving image do
    not count (as ITK). ``seg``: overlap SSD of the segmentation channels over the whole fixed grid
    (the warped moving segmentation is 0 outside the moving image).
    """
    pts = moving_points_mm.reshape(-1, 3)
    fvals = jnp.asarray(data.fixed.array).reshape(pts.shape[0], -1)
    weight = data.image_weight.reshape(-1)
    sampled = image and opts.image_samples is not None and opts.image_samples < pts.shape[0]
    terms: dict[str, jax.Array] = {}
    if seg or (image and not sampled):
        moving = data.moving if seg else _image_channel(data.moving)
        mvals, inside = sample_channels(moving, pts, 0.0)
    if seg:
        terms["seg"] = overlap_ssd(fvals[:, 1:], mvals[:, 1:], jnp.ones_like(weight))
    if not image:
        return terms
    fimg = fvals[:, 0]
    if sampled:
        n = opts.image_samples
        # uniform draws; those outside the ROI get weight 0 (no cumulative-sum search over the grid)
        idx = jax.random.randint(key, (n,), 0, pts.shape[0])
        mvals, inside = sample_channels(_image_channel(data.moving), pts[idx], 0.0)
        fimg, weight = fimg[idx], weight[idx]
    w = weight * inside.astype(jnp.float32)
    mimg = mvals[:, 0]
    if opts.metric == "mi":
        terms["image"] = -mattes_mi(
            fimg, mimg, w, fixed_range=(data.fixed_range[0], data.fixed_range[1]),
            moving_range=(data.moving_range[0], data.moving_range[1]), bins=opts.bins,
            fixed_order=opts.fixed_parzen_order,
        )
    elif opts.metric == "ssd":
        terms["image"] = ssd(fimg, mimg, w)
    else:
        raise ValueError(f"unknown metric '{opts.metric}' (use mi or ssd)")
    return terms


def _image_channel(vol: Volume) -> Volume:
    return vol.with_array(vol.array[..., :1])

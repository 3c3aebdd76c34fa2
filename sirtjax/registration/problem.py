"""One registration problem at one pyramid level: the arrays a step reads, built on the host.

A :class:`LevelData` holds everything a jit-compiled step needs for one pair at one resolution, as
a pytree of arrays (so pairs of equal shape stack along a leading axis and vmap): the fixed
channels ``(z, y, x, 1 + C)`` (image, then C segmentation channels: a liver mask or one-hot label
classes) on the box around the region of interest, the moving channels ``(z', y', x', 1 + C)`` on
the moving level grid, the region of interest where the segmentation term is evaluated (as a 0/1 map and as a padded list of its flat
voxel indices, so random samples are drawn without a search over the grid), the intensity ranges
that define the MI bins, the stiffness map and the affine (the non-rigid stage's starting point). The
fixed box may be padded past its true extent (:mod:`~sirtjax.registration.padding`). The similarity terms
on a level are in :mod:`~sirtjax.registration.terms`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
import scipy.ndimage as ndi

from sirtjax.buckets import pad_to
from sirtjax.programs import ProgramCache
from sirtjax.registration.pyramid import channel_boxes, pyramid_level, pyramid_level_sparse
from sirtjax.registration.warp import AffineTransform, identity_affine
from sirtjax.volume import Volume, make_volume


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LevelData:
    """Arrays of one pair at one level (see module docstring); every field is a pytree leaf."""

    fixed: Volume
    moving: Volume
    roi_weight: jax.Array
    roi_index: jax.Array
    roi_count: jax.Array
    fixed_range: jax.Array
    moving_range: jax.Array
    stiffness: jax.Array
    affine: AffineTransform
    radius_mm: jax.Array
    box_fraction: jax.Array  # valid voxels of the ROI box / voxels of the whole level grid (1 when not cut)
    base_field: jax.Array  # (z', y', x', 3) mm field the non-rigid stage adds its own to (on its node grid); (1, 1, 1, 3) zeros = none
    moving_size_xyz: jax.Array  # (3,) float32 voxels of the moving level grid; its array may be padded past them
    fixed_size_zyx: jax.Array  # (3,) int32 valid voxels of the fixed box; its arrays may be padded past them


def stack_channels(image: Volume, seg: np.ndarray | None, width: int = 0) -> Volume:
    """Image (z, y, x) and optional segmentation channels (z, y, x, C) as one (z, y, x, 1 + C) float32 Volume, the
    segmentation padded with empty channels to ``width`` channels when it has fewer."""
    n = 0 if seg is None else seg.shape[-1]
    seg_channels = max(n, width) if n else 0
    arr = np.zeros(image.shape + (1 + seg_channels,), np.float32)
    arr[..., 0] = np.asarray(image.array)
    if n:
        arr[..., 1 : 1 + n] = np.asarray(seg)
    return make_volume(arr, image.spacing_mm, image.origin_mm, image.direction)


def stack_levels(stack: Volume, resolutions_mm: Sequence[float], programs: ProgramCache | None = None) -> list[Volume]:
    """Pyramid levels of stacked channels (float32 host arrays): the image densely, the segmentation
    channels only around their non-zero voxels (:func:`pyramid.pyramid_level_sparse`)."""
    arr = np.asarray(stack.array)
    if arr.shape[-1] == 1:
        return [_as_f32(pyramid_level(stack, r, programs)) for r in resolutions_mm]
    seg = stack.with_array(arr[..., 1:])
    boxes = channel_boxes(seg.array)
    levels = []
    for r in resolutions_mm:
        image = np.asarray(pyramid_level(stack.with_array(arr[..., :1]), r, programs).array)
        level = pyramid_level_sparse(seg, r, boxes, programs)
        levels.append(_as_f32(level.with_array(np.concatenate([image, level.array], axis=-1))))
    return levels


def make_level(
    fixed: Volume,
    moving: Volume,
    *,
    stiffness_inside: float = 1.0,
    roi_margin_mm: float | None = None,
) -> LevelData:
    """LevelData from the fixed and moving stacked channels at one pyramid level (:func:`stack_levels`), as host (numpy) arrays.

    The stiffness map is ``1 + (stiffness_inside - 1) * liver`` with the liver taken from the fixed
    segmentation's first channel (uniform 1 without segmentation). The region of interest (where
    the similarity terms are evaluated) is the fixed segmentation (any channel) grown by
    ``roi_margin_mm``; without segmentation channels, with ``roi_margin_mm=None`` or with an empty
    segmentation it is the whole grid.
    """
    f, m = _as_f32(fixed), _as_f32(moving)
    farr, marr = f.array, m.array
    liver = farr[..., 1] if farr.shape[-1] > 1 else np.zeros(farr.shape[:3], np.float32)
    ranges = [intensity_range(a[..., 0]) for a in (farr, marr)]
    return LevelData(
        fixed=f, moving=m, **_roi_fields(roi_mask(farr, np.asarray(f.spacing_mm), roi_margin_mm)),
        fixed_range=ranges[0], moving_range=ranges[1],
        stiffness=(1.0 + (np.float32(stiffness_inside) - 1.0) * liver).astype(np.float32),
        affine=identity_affine(),
        radius_mm=np.float32(1.0), box_fraction=np.float32(1.0), base_field=np.zeros((1, 1, 1, 3), np.float32),
        moving_size_xyz=np.asarray(marr.shape[:3][::-1], np.float32),
        fixed_size_zyx=np.asarray(farr.shape[:3], np.int32),
    )


RANGE_PERCENTILES = (0.5, 99.5)
AIR_HU = -1024.0  # the lowest CT value that is a tissue (air); scanners write -2048 or -3024 outside their field of view


def intensity_range(image: np.ndarray, max_samples: int = 1 << 17) -> np.ndarray:
    """The MI bin range (2,) float32 of an image: its 0.5th and 99.5th intensity percentiles (host).

    Winsorised as ANTs' usual ``[0.005, 0.995]``: a few extreme voxels (metal, iodine, MR hot spots) would
    otherwise stretch the range and squeeze the tissues into a few bins; voxels past it fall into the end bins.
    Voxels below -1024 do not count when others are at or above it: on a CT (Hounsfield units) they are
    the padding outside the reconstruction circle (-2048 or -3024, often a fifth of a slice), not tissue; MR,
    SPECT and PET images are not negative. Percentiles of a regular subsample of at most ``max_samples``
    voxels (approximate, well within a bin on images of more than a few thousand voxels); when the
    percentiles coincide (a small object on a constant background) the range is the image's min and max.
    """
    flat = np.asarray(image, np.float32).ravel()
    sub = flat[:: max(1, flat.size // max_samples)]
    if sub.min() < AIR_HU and sub.max() >= AIR_HU:
        sub = sub[sub >= AIR_HU]
    lo, hi = np.percentile(sub, RANGE_PERCENTILES)
    if hi <= lo:
        lo, hi = flat.min(), flat.max()
    return np.asarray([lo, hi], np.float32)


def pad_moving(level: LevelData, shape_zyx) -> LevelData:
    """The level with its moving channels padded at the high-index end to shape (z, y, x) by repeating the
    border voxels (host). The grid (origin, spacing) and ``moving_size_xyz`` are kept, so sampling and the
    outside test are unchanged: within half a voxel of the border the padding equals ITK's clamping."""
    m = level.moving
    return dataclasses.replace(level, moving=Volume(pad_to(m.array, shape_zyx, "edge"), m.spacing_mm, m.origin_mm, m.direction))


def _roi_fields(roi: np.ndarray) -> dict[str, np.ndarray]:
    """LevelData's ROI fields from a 0/1 map: the map (float32), its flat voxel indices padded to the grid size, their count."""
    flat = np.flatnonzero(roi > 0)
    index = np.zeros(roi.size, np.int32)
    index[: flat.size] = flat
    return {"roi_weight": np.asarray(roi, np.float32), "roi_index": index, "roi_count": np.int32(flat.size)}


def roi_box(level: LevelData) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (start, size) (z, y, x) voxels of the level's region of interest grown by one voxel (host)."""
    roi = np.asarray(level.roi_weight) > 0
    start, stop = channel_boxes(roi[..., None])[0]
    lo, hi = np.maximum(start - 1, 0), np.minimum(stop + 1, roi.shape)
    return lo, hi - lo


def crop_level(level: LevelData, start_zyx: np.ndarray, size_zyx: np.ndarray) -> LevelData:
    """The level with its fixed grid (channels, ROI, stiffness) cut to a box (z, y, x voxels) (host).

    The box is moved inside the grid if it sticks out. Along an axis where it is longer than the grid it
    covers the whole axis, and the arrays are padded with zeros at the high end to the box's size (the ROI
    0 there); ``fixed_size_zyx`` keeps the valid extent (:mod:`~sirtjax.registration.padding`). The moving
    image, ranges and affine are kept; world coordinates are unchanged (the origin moves).
    """
    shape, size = np.asarray(level.roi_weight.shape), np.asarray(size_zyx)
    valid = np.minimum(size, shape)
    start = np.clip(np.asarray(start_zyx), 0, shape - valid)
    sl = tuple(slice(int(a), int(a + n)) for a, n in zip(start, valid))

    def cut(array: np.ndarray) -> np.ndarray:
        return pad_to(np.asarray(array)[sl], size)

    f = level.fixed
    origin = (np.asarray(f.origin_mm) + np.asarray(f.direction) @ (np.asarray(f.spacing_mm) * start[::-1])).astype(np.float32)
    return dataclasses.replace(
        level, fixed=Volume(cut(f.array), f.spacing_mm, origin, f.direction),
        **_roi_fields(cut(level.roi_weight)), stiffness=cut(level.stiffness), fixed_size_zyx=valid.astype(np.int32),
        box_fraction=np.float32(level.box_fraction * np.prod(valid) / np.prod(shape)))


def roi_mask(fixed_channels: np.ndarray, spacing_mm: np.ndarray, margin_mm: float | None) -> np.ndarray:
    """Region of interest (z, y, x) bool: segmentation channels (z, y, x, 1 + C) > 0.5 grown by margin_mm.

    The margin is exact in mm on anisotropic grids (Euclidean distance transform); no segmentation,
    no margin (None) or an empty segmentation give the whole grid.
    """
    shape = fixed_channels.shape[:3]
    if margin_mm is None or fixed_channels.shape[-1] < 2:
        return np.ones(shape, bool)
    above = (fixed_channels[..., 1:] > 0.5).astype(np.float32)
    seg = above @ np.ones(above.shape[-1], np.float32) > 0  # any channel; a product, 2.5x faster than max over channels
    if not seg.any():
        return np.ones(shape, bool)
    # only the segmentation's bounding box grown by the margin can be within it: the distance map there alone
    spacing_zyx = np.asarray(spacing_mm, np.float64)[::-1]
    start, stop = channel_boxes(seg[..., None])[0]
    reach = np.ceil(margin_mm / spacing_zyx).astype(int) + 1
    lo, hi = np.maximum(start - reach, 0), np.minimum(stop + reach, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = np.zeros(shape, bool)
    out[box] = ndi.distance_transform_edt(~seg[box], sampling=spacing_zyx) <= margin_mm
    return out


def _as_f32(vol: Volume) -> Volume:
    """The Volume with every field a float32 numpy array (host)."""
    return Volume(*(np.asarray(getattr(vol, f.name), np.float32) for f in dataclasses.fields(Volume)))

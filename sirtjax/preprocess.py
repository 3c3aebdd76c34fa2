"""Resampling in physical space (through :mod:`sirtjax.interpolate`, ITK's rules), intensity windowing and cropping."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from sirtjax.buckets import bucket_grid, bucket_volume
from sirtjax.interpolate import axis_aligned, resample_separable, sample_world
from sirtjax.programs import Program, ProgramCache
from sirtjax.volume import Grid, Volume, describe_grid, index_to_world, make_grid, make_volume, same_grid, world_grid, world_to_index


def resample_to(
    moving: Volume, reference: Grid | Volume, *, order: int = 1, default_value: float = 0.0,
    smooth_vox_zyx: Sequence[float] | None = None, programs: ProgramCache | None = None,
) -> Volume:
    """Resample a scalar Volume onto the reference grid (identity transform), like SimpleITK.

    Args:
      moving: the image to resample, any grid and direction.
      reference: gives the output grid (shape, spacing, origin, direction).
      order: 1 for trilinear (images), 0 for nearest neighbour (labels; keeps the voxel type).
      default_value: value outside the moving image.
      smooth_vox_zyx: order 1 only: first smooth moving by a Gaussian of these sigmas (moving's voxels, z, y, x), as
        scipy's ``gaussian_filter(mode="nearest")`` does (anti-aliasing before down-sampling).
      programs: a :class:`~sirtjax.programs.ProgramCache` that keeps the compiled resampling, for arrays padded to
        bucket shapes (the same values; other grids of similar size share the program).

    Returns:
      A Volume on the reference grid; float32 for order 1, the moving dtype for order 0. When the reference's voxel
      axes lie along the moving image's (:func:`~sirtjax.interpolate.axis_aligned`), order 1 (and its smoothing)
      runs as one-axis passes (:func:`~sirtjax.interpolate.resample_separable`).
    """
    sigma_zyx = (0.0, 0.0, 0.0) if smooth_vox_zyx is None else tuple(float(s) for s in smooth_vox_zyx)
    if order != 1 and any(sigma_zyx):
        raise ValueError("smoothing is for trilinear resampling (order 1)")
    if not all(np.isfinite(s) and s >= 0 for s in sigma_zyx):
        raise ValueError(f"smoothing sigmas must be finite and >= 0, got {sigma_zyx}")
    index_map = world_to_index(moving) @ index_to_world(reference)
    if order == 1 and axis_aligned(index_map):
        out = resample_separable(moving.array, index_map, reference.shape, default_value, sigma_zyx, programs)
    else:
        if order == 1:
            array = np.asarray(moving.array, np.float32)
            moving = moving.with_array(ndimage.gaussian_filter(array, sigma_zyx, mode="nearest") if any(sigma_zyx) else array)
        out = _sampled_on(moving, reference.grid, order, default_value, programs)
    return make_volume(np.asarray(out), reference.spacing_mm, reference.origin_mm, reference.direction)


def _sample_grid(moving: Volume, grid: Grid, order: int, default_value, moving_size_xyz: jax.Array | None = None) -> jax.Array:
    return sample_world(moving, world_grid(grid), order=order, default_value=default_value, size_xyz=moving_size_xyz)


_resample = Program(_sample_grid, "resample", static_argnums=(2,))


def _sampled_on(moving: Volume, grid: Grid, order: int, default_value: float, programs: ProgramCache | None):
    """:func:`resample_to`'s gathering path: with ``programs``, the moving image (by its border voxels, its true size
    kept for the outside test) and the grid padded at their high end to :func:`~sirtjax.buckets.grid_bucket`
    shapes, the result (host) cut back."""
    if programs is None:
        return _resample(moving, grid, order, np.float32(default_value))
    out = _resample(bucket_volume(moving, "edge", np.float32 if order == 1 else None), bucket_grid(grid), order,
                    np.float32(default_value), np.asarray(moving.shape[::-1], np.float32), programs=programs)
    return np.asarray(out)[tuple(slice(0, n) for n in grid.shape)]


def resample_to_spacing(vol: Volume, spacing_mm: tuple[float, float, float], *, order: int = 1) -> Volume:
    """Resample onto a grid with the given spacing (x, y, z mm) covering the same extent."""
    spacing = np.asarray(spacing_mm, np.float64)
    old = np.asarray(vol.spacing_mm, np.float64)
    extent = old * np.asarray(vol.size_xyz)
    size_xyz = np.maximum(1, np.round(extent / spacing)).astype(int)
    # keep the outer boundary of the field of view: first voxel centre half a new voxel inside it
    first = (-0.5 * old + 0.5 * spacing)
    origin = np.asarray(vol.origin_mm) + np.asarray(vol.direction) @ first
    return resample_to(vol, make_grid(size_xyz[::-1], spacing, origin, vol.direction), order=order)


PAD_VALUE = -0.5  # the windows' floor, windowed air: what a network input reads beyond its scan


def window(image: jax.Array | np.ndarray, low: float, high: float) -> jax.Array | np.ndarray:
    """Clip intensities to [low, high] and map them linearly to [-0.5, 0.5] (thesis 4.3.2); float32, a host
    array on the host (no program compiled per shape), a JAX array (or tracer) in JAX."""
    xp = np if isinstance(image, np.ndarray) else jnp
    image = xp.clip(xp.asarray(image, xp.float32), low, high)
    return (image - low) / (high - low) - 0.5


CT_WINDOW_HU = (-200.0, 200.0)  # the thesis's CT window (4.3.2)


def window_ct(image_hu: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """CT window of the thesis: clip to CT_WINDOW_HU, [-200, 200] HU, map to [-0.5, 0.5]."""
    return window(image_hu, *CT_WINDOW_HU)


MR_PEAK_PERCENTILE, MR_PEAK_SPREAD = 99.9, 2.0  # the MR window's peak is at most min + 2 x (99.9th percentile - min)


def mr_peak(image: np.ndarray) -> float:
    """The MR window's peak: the image's maximum, unless that lies beyond min + MR_PEAK_SPREAD x (the
    MR_PEAK_PERCENTILE-th percentile of the voxels above the minimum - min), where that bound takes its place.

    One hot voxel (inflow, a saturated or corrupt value) at 50 times the tissue's brightness would otherwise press the
    whole body into the window's floor (liver DSC 0.0 on validation MR); the study renderer's MRs have their maximum
    within 1.3 times that percentile, so for them the peak is the maximum. Voxels at the minimum (padding) do not
    count, so a small body in a large empty field keeps its own peak. Host numpy (a partition; jax sorts, 60 times
    slower): not for use under jit."""
    image = np.asarray(image, np.float32)
    low, high = float(image.min()), float(image.max())
    above = image[image > low]
    if above.size == 0:
        return high
    return min(high, low + MR_PEAK_SPREAD * (float(np.percentile(above, MR_PEAK_PERCENTILE)) - low))


PADDING_GAP = 0.25  # a minimum this far (a fraction of the range of the other voxels) below all others is padding


def lowest_unpadded(image: np.ndarray) -> float:
    """The image's lowest value that is not padding: its minimum, or, when the minimum is negative and lies below every
    other voxel by more than PADDING_GAP times their range (max - their lowest), the lowest of those others.

    A measured image has no such gap (MR background noise, and CT air from -1024 HU up, run on without one); an MR
    converted with a padding value such as -32768 has one. An MR background of 0 is never padding: a noiseless body
    above it keeps its contrast. Approximate: one padding value only."""
    image = np.asarray(image)
    low, high = float(image.min()), float(image.max())
    if low >= 0:
        return low
    floor = float(np.min(image, where=image > low, initial=high))
    return floor if floor - low > PADDING_GAP * (high - floor) else low


def lift_padding(image: np.ndarray) -> np.ndarray:
    """The image (float32) with padding (:func:`lowest_unpadded`) raised to the lowest of its other voxels, so that an
    MR's window does not take a padding value such as -32768 for its floor and press the whole body into its top.
    Host numpy, not for use under jit."""
    image = np.asarray(image, np.float32)
    return np.maximum(image, lowest_unpadded(image))


def window_mr(image: np.ndarray) -> np.ndarray:
    """MR window of the thesis: clip to [min, 80 % of max], map to [-0.5, 0.5], with padding far below the image
    lifted (:func:`lift_padding`) and an outlying maximum replaced (:func:`mr_peak`; host only, not under jit)."""
    image = lift_padding(image)
    return window_mr_between(image, float(image.min()), mr_peak(image))


def window_mr_between(image: jax.Array | np.ndarray, low, peak) -> jax.Array | np.ndarray:
    """The MR window's rule for given extremes: clip to [low, low + 80 % of (peak - low)], map to [-0.5, 0.5]; a host
    array on the host, a JAX array (or tracer) in JAX (float32 either way)."""
    high = low + 0.8 * (peak - low)
    if isinstance(image, np.ndarray):
        return (np.clip(image, low, high) - low) / np.float32(max(high - low, 1e-6)) - 0.5
    return (jnp.clip(image, low, high) - low) / jnp.maximum(high - low, 1e-6) - 0.5


def crop_to_mask(vol: Volume, mask: np.ndarray, *, margin_mm: float = 0.0) -> Volume:
    """Crop a Volume to the bounding box of a non-empty mask plus margin_mm; origin is updated."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("cannot crop to an empty mask")
    margin = np.ceil(margin_mm / np.asarray(vol.spacing_mm)[::-1]).astype(int)  # (z, y, x)
    nz = np.nonzero(mask)
    lo = np.maximum([a.min() for a in nz] - margin, 0)
    hi = np.minimum([a.max() + 1 for a in nz] + margin, vol.shape)
    sub = np.asarray(vol.array)[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    origin = np.asarray(vol.origin_mm) + np.asarray(vol.direction) @ (np.asarray(vol.spacing_mm) * lo[::-1])
    return make_volume(sub, vol.spacing_mm, origin, vol.direction)


def labels_on_grid(labels: Volume, grid: Volume, name: str, grid_name: str = "activity") -> tuple[np.ndarray, dict]:
    """A label map (z, y, x) on the grid of ``grid`` (int32) and a JSON-ready note of the resampling.

    Same grid: used as is. Another grid: resampled by nearest neighbour in physical space
    (:func:`resample_to`). Raises ValueError when the labels are not integers, or
    are non-empty but fall entirely outside the grid.
    """
    array = np.asarray(labels.array)
    if array.dtype == np.bool_:
        array = array.astype(np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"the {name} image is not a mask or label map (non-integer values)")
    if np.any(array < 0):
        raise ValueError(f"the {name} label map has negative labels")
    array = array.astype(np.int32)
    input_ml = float(np.count_nonzero(array)) * float(np.prod(labels.spacing_mm)) / 1000.0
    if same_grid(labels, grid):
        on_grid, resampled = array, False
    else:
        on_grid = np.asarray(resample_to(labels.with_array(array), grid, order=0).array, np.int32)
        resampled = True
        if input_ml > 0 and not np.any(on_grid):
            raise ValueError(f"the {name} mask does not overlap the {grid_name} grid ({describe_grid(grid)})")
    note = {
        "resampled_nearest": resampled,
        "input_grid": describe_grid(labels),
        "volume_ml_input": input_ml,
        "volume_ml_on_grid": float(np.count_nonzero(on_grid)) * float(np.prod(grid.spacing_mm)) / 1000.0,
    }
    return on_grid, note

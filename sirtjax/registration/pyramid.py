"""Multi-resolution pyramids in physical space: Gaussian smoothing and grid shrinking.

A level with shrink factor ``f`` has spacing ``f * spacing`` along every axis and
``ceil(n / f)`` voxels; its first voxel centre sits at the centre of the first ``f`` fine voxels, so
the field of view is kept. Before shrinking, images are smoothed with a Gaussian of standard
deviation ``0.5 * f`` fine voxels (elastix's and ITK's default schedule), which suppresses aliasing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration.warp import gather_linear
from sirtjax.volume import Volume, make_volume, world_grid, world_points_to_index


def gaussian_kernel_1d(sigma_vox: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised sampled Gaussian (2r+1,) with r = ceil(truncate * sigma), like scipy.ndimage."""
    radius = max(int(truncate * sigma_vox + 0.5), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_smooth(array: jax.Array, sigma_vox_zyx: tuple[float, float, float]) -> jax.Array:
    """Separable Gaussian smoothing of a (z, y, x[, C]) array; sigmas in voxels per (z, y, x) axis.

    Borders are replicated (scipy.ndimage mode 'nearest'); a sigma of 0 leaves that axis alone.
    """
    out = jnp.asarray(array, jnp.float32)
    for axis, sigma in enumerate(sigma_vox_zyx):
        if sigma <= 0:
            continue
        k = jnp.asarray(gaussian_kernel_1d(float(sigma)))
        r = (k.shape[0] - 1) // 2
        moved = jnp.moveaxis(out, axis, -1)
        lead = moved.shape[:-1]
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = jnp.pad(flat, ((0, 0), (0, 0), (r, r)), mode="edge")
        conv = jax.lax.conv_general_dilated(flat, k[None, None, :], (1,), "VALID")
        out = jnp.moveaxis(conv.reshape(*lead, -1), -1, axis)
    return out


def shrink_grid(vol: Volume, factor: int) -> Volume:
    """The grid of a pyramid level with integer shrink factor (host); array is a uint8 placeholder."""
    spacing = np.asarray(vol.spacing_mm, np.float64)
    size_xyz = np.asarray(vol.size_xyz)
    new_size = np.maximum(1, np.ceil(size_xyz / factor)).astype(int)
    offset_vox = 0.5 * (factor - 1)
    origin = np.asarray(vol.origin_mm, np.float64) + np.asarray(vol.direction, np.float64) @ (spacing * offset_vox)
    return make_volume(np.zeros(tuple(new_size[::-1]), np.uint8), spacing * factor, origin, vol.direction)


@jax.jit(static_argnums=2)
def smooth_and_sample(vol: Volume, grid: Volume, sigma_vox_zyx: tuple[float, float, float]) -> jax.Array:
    """Smooth vol (z, y, x[, C]) by sigma voxels and sample it linearly at grid's voxel centres."""
    smoothed = gaussian_smooth(vol.array, sigma_vox_zyx)
    idx = world_points_to_index(vol, world_grid(grid))
    return gather_linear(smoothed, idx)


def pyramid_level(vol: Volume, resolution_mm: float) -> Volume:
    """A (z, y, x[, C]) Volume at a pyramid resolution (mm), float32.

    Axes finer than the resolution are smoothed with sigma = 0.5 * resolution_mm (in mm, converted
    to voxels per axis); the grid shrinks by the largest integer factor f with
    ``f * max(spacing) <= resolution_mm``. At or below the native resolution the Volume is returned
    unchanged (as float32).
    """
    spacing_zyx = np.asarray(vol.spacing_mm, np.float64)[::-1]
    sigma = tuple(float(0.5 * resolution_mm / s) if resolution_mm > 1.01 * s else 0.0 for s in spacing_zyx)
    factor = factor_for_spacing(np.asarray(vol.spacing_mm), resolution_mm)
    if factor == 1 and not any(sigma):
        return vol.with_array(jnp.asarray(vol.array, jnp.float32))
    grid = shrink_grid(vol, factor)
    arr = smooth_and_sample(vol, grid, sigma)
    return Volume(arr, grid.spacing_mm, grid.origin_mm, grid.direction)


def factor_for_spacing(spacing_mm: np.ndarray, resolution_mm: float) -> int:
    """Largest integer shrink factor f with f * max(spacing) <= resolution_mm (at least 1)."""
    return max(1, int(math.floor(resolution_mm / float(np.max(spacing_mm)) + 1e-6)))

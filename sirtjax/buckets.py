"""Bucket shapes: grid shapes rounded up to a few sizes, so that the compiled programs of one patient's grids serve
other patients' grids of similar size; arrays are padded at their high end to them (:func:`pad_to`) and the results cut
back. The registration's levels (:mod:`sirtjax.registration.padding` keeps their true extent), its finish, the
warps and the resamplings use them.
"""

from __future__ import annotations

import numpy as np

from sirtjax.volume import Grid, Volume

PAD_BUDGET_VOXELS = 2**24  # bucket padding past this many voxels (~0.6 s on 2 cores) costs more than a compile (~1 s)


def pad_to(array, shape_zyx, mode: str = "constant") -> np.ndarray:
    """A host (z, y, x, ...) array padded at its high end to ``shape_zyx`` (zeros, or ``mode`` "edge": its border voxels)."""
    array = np.asarray(array)
    pad = [(0, int(n) - s) for n, s in zip(shape_zyx, array.shape[:3])] + [(0, 0)] * (array.ndim - 3)
    return np.pad(array, pad, mode=mode)


def bucket(shape_zyx) -> np.ndarray:
    """A grid shape with each axis rounded up to the next size 2^k or 3 * 2^k (at least 8: 8, 12, 16, 24, 32, 48, ...).

    Steps are compiled per shape; sizes at most 1.5x apart make the grids of different patients
    (their liver boxes, their moving images) fall on the same few shapes, so the compiled steps
    and the persistent cache are reused across patients, for at most 1.5x the voxels per axis.
    """
    n = np.maximum(np.asarray(shape_zyx, np.int64), 8)
    power = 2 ** np.floor(np.log2(n - 1)).astype(np.int64)  # largest power of 2 below n
    return np.where(n <= power * 3 // 2, power * 3 // 2, 2 * power)


MIN_BUCKET_MM = 256.0  # grids shorter than this along an axis are padded towards it (coarse_bucket)


def fine_bucket(shape_zyx) -> np.ndarray:
    """A grid shape with each axis rounded up to a multiple of an eighth of its largest power of 2 not above it (at
    least 8): at most 1/8 more voxels per axis than max(n, 8), eight shapes per doubling."""
    n = np.maximum(np.asarray(shape_zyx, np.int64), 8)
    step = 2 ** (np.floor(np.log2(n)).astype(np.int64) - 3)
    return -(-n // step) * step


def coarse_bucket(shape_zyx, spacing_zyx_mm=None) -> np.ndarray:
    """A grid shape with each axis rounded up to a power of 2 (at least 8): coarser buckets than :func:`bucket`'s.

    For arrays whose size barely changes the cost of the program that reads them (a registration step samples
    a fixed number of voxels of its moving grid), or changes it little next to the compile that a new shape
    costs (the pyramid smoothing, the final warp): more patients' grids share one compiled program.
    With ``spacing_zyx_mm``, an axis shorter than ``MIN_BUCKET_MM`` is first lengthened towards it, at most
    doubled: a field of view cut to 61 slices of 3 mm then shares the 128-slice programs of the usual
    abdominal ones instead of compiling 64-slice programs of its own. At most 4x the voxels per axis in memory.
    """
    n = np.maximum(np.asarray(shape_zyx, np.int64), 8)
    if spacing_zyx_mm is not None:
        want = np.ceil(MIN_BUCKET_MM / np.asarray(spacing_zyx_mm, np.float64) - 1e-6).astype(np.int64)
        n = np.maximum(n, np.minimum(want, 2 * n))
    return 2 ** np.ceil(np.log2(n)).astype(np.int64)


def within_budget(coarse: np.ndarray, fine: np.ndarray, true_shape_zyx, pad_budget_voxels: int = PAD_BUDGET_VOXELS) -> np.ndarray:
    """The bucket shape ``coarse``, or ``fine`` where padding an array of ``true_shape_zyx`` to ``coarse`` would add
    more than ``pad_budget_voxels`` voxels (a CT as scanners reconstruct it: its coarse bucket can hold 3-7 times
    its voxels)."""
    return fine if np.prod(coarse, dtype=np.int64) - np.prod(true_shape_zyx, dtype=np.int64) > pad_budget_voxels else coarse


def grid_bucket(grid: Grid | Volume) -> np.ndarray:
    """:func:`coarse_bucket` of a grid's (or volume's) shape at its own spacing, or its :func:`fine_bucket` where the
    coarse one is over the padding budget (:func:`within_budget`)."""
    shape = np.asarray(grid.shape[:3])
    return within_budget(coarse_bucket(shape, np.asarray(grid.spacing_mm, np.float64)[::-1]), fine_bucket(shape), shape)


def bucket_grid(grid: Grid | Volume) -> Grid:
    """``grid`` lengthened at its high end to its :func:`grid_bucket` shape: the same geometry, more voxels."""
    return Grid(tuple(int(n) for n in grid_bucket(grid)), grid.spacing_mm, grid.origin_mm, grid.direction)


def bucket_volume(vol: Volume, mode: str = "constant", dtype=None) -> Volume:
    """``vol``'s array (as ``dtype``) padded at its high end to its :func:`grid_bucket` shape (zeros, or ``mode``
    "edge": its border voxels) on the same geometry, for programs that are given its true size apart."""
    return Volume(pad_to(np.asarray(vol.array, dtype), grid_bucket(vol), mode), vol.spacing_mm, vol.origin_mm, vol.direction)

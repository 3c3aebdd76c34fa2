"""Validation of metric inputs: Volumes or (z, y, x) arrays with ITK-ordered spacing (host)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from sirtjax.volume import Volume, describe_grid, index_to_world, make_volume, same_grid

MaskLike = Any  # a Volume or a (z, y, x) numpy/JAX array


def as_volume(x: MaskLike, spacing_mm: Any | None, name: str) -> Volume:
    """x as a Volume: Volumes keep their geometry; arrays need spacing_mm (x, y, z), identity direction."""
    if isinstance(x, Volume):
        if spacing_mm is not None:
            raise TypeError(f"{name} is a Volume: its spacing is its own, do not pass spacing_mm")
        arr = np.asarray(x.array)
        if arr.ndim != 3:
            raise ValueError(f"{name} must be a scalar (z, y, x) image, got shape {arr.shape}")
        return Volume(arr, x.spacing_mm, x.origin_mm, x.direction)
    if spacing_mm is None:
        raise TypeError(f"{name} is a plain array: pass spacing_mm in ITK (x, y, z) order")
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a (z, y, x) array, got shape {arr.shape}")
    return make_volume(arr, spacing_mm)


def as_pair(pred: MaskLike, ref: MaskLike, spacing_mm: Any | None) -> tuple[Volume, Volume]:
    """pred and ref as Volumes on one grid (two Volumes, or two arrays of one shape plus spacing_mm)."""
    if isinstance(pred, Volume) != isinstance(ref, Volume):
        raise TypeError("pass two Volumes, or two arrays plus spacing_mm, not a mix")
    p = as_volume(pred, spacing_mm, "pred")
    r = as_volume(ref, spacing_mm, "ref")
    if not same_grid(p, r):
        raise ValueError(f"pred grid {describe_grid(p)} differs from ref grid {describe_grid(r)}")
    return p, r


def as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """A label map as a non-negative integer array (bool -> 0/1; floats must hold integers)."""
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} is not a label map: it holds non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} is not a label map: voxel type {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} is not a label map: it holds negative labels")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{name} is not a label map: labels exceed int32")
    return arr if arr.dtype in (np.uint8, np.uint16, np.int32) else arr.astype(np.int32)


def spacing_zyx(vol: Volume) -> np.ndarray:
    """Voxel spacing in array-axis order (z, y, x), mm, float64 (host)."""
    return np.asarray(vol.spacing_mm, np.float64)[::-1].copy()


def centre_index_to_world(vol: Volume, centre_zyx: np.ndarray) -> np.ndarray:
    """World LPS mm (x, y, z) of continuous array positions (..., 3) in (z, y, x) order (host)."""
    m = index_to_world(vol)
    return np.asarray(centre_zyx, np.float64)[..., ::-1] @ m[:3, :3].T + m[:3, 3]


def label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box (z, y, x slices) of every non-zero label present in an integer label map."""
    return {i + 1: b for i, b in enumerate(ndimage.find_objects(labels)) if b is not None}

"""Masks and label maps brought onto the activity grid (nearest neighbour), with what was done."""

from __future__ import annotations

import contextlib

import numpy as np

from sirtjax.dosimetry.dose import voxel_volume_ml
from sirtjax.preprocess import resample_to
from sirtjax.volume import Volume, describe_grid, same_grid


class DoseInputError(ValueError):
    """A ValueError that names the input at fault: activity, liver, lesions, lungs, ct or a parameter name."""

    def __init__(self, input_name: str, problem: str):
        self.input_name = input_name
        super().__init__(problem)


@contextlib.contextmanager
def blame(input_name: str):
    """Turn a ValueError raised inside the block into a DoseInputError naming input_name."""
    try:
        yield
    except DoseInputError:
        raise
    except ValueError as exc:
        raise DoseInputError(input_name, str(exc)) from None


def labels_on_grid(labels: Volume, grid: Volume, name: str) -> tuple[np.ndarray, dict]:
    """A label map (z, y, x) on the grid of ``grid`` (int32) and a JSON-ready note of the resampling.

    Same grid: used as is. Another grid: resampled by nearest neighbour in physical space
    (:func:`sirtjax.preprocess.resample_to`). Raises ValueError when the labels are not integers, or
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
    input_ml = float(np.count_nonzero(array)) * voxel_volume_ml(labels.spacing_mm)
    if same_grid(labels, grid):
        on_grid, resampled = array, False
    else:
        on_grid = np.asarray(resample_to(labels.with_array(array), grid, order=0).array, np.int32)
        resampled = True
        if input_ml > 0 and not np.any(on_grid):
            raise ValueError(f"the {name} mask does not overlap the activity grid ({describe_grid(grid)})")
    note = {
        "resampled_nearest": resampled,
        "input_grid": describe_grid(labels),
        "volume_ml_input": input_ml,
        "volume_ml_on_grid": float(np.count_nonzero(on_grid)) * voxel_volume_ml(grid.spacing_mm),
    }
    return on_grid, note


def image_on_grid(image: Volume, grid: Volume, name: str, needed: np.ndarray) -> np.ndarray:
    """A scalar image (float32, (z, y, x)) on the grid (trilinear); ValueError if it misses a needed voxel."""
    if same_grid(image, grid):
        return np.asarray(image.array, np.float32)
    ones = image.with_array(np.ones(image.shape, np.float32))
    covered = np.asarray(resample_to(ones, grid, order=1).array) > 0.5
    missing = int(np.count_nonzero(np.asarray(needed, bool) & ~covered))
    if missing:
        raise ValueError(f"the {name} image does not cover {missing} voxels of the activity grid that hold activity")
    return np.asarray(resample_to(image, grid, order=1).array, np.float32)

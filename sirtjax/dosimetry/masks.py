"""Images brought onto the activity grid, the liver's disjoint compartments, and errors that name the dosimetry input
at fault."""

from __future__ import annotations

import contextlib

import numpy as np

from sirtjax.preprocess import resample_to
from sirtjax.volume import Volume, same_grid


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


def liver_compartments(liver: np.ndarray, lesions: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Disjoint label map (int32, 1..K) and names: normal_liver (the liver less the lesions), then lesion_<id> for
    every lesion id in increasing order (a lesion voxel outside the liver is still the lesion's)."""
    labels = (np.asarray(liver) > 0).astype(np.int32)
    names = ["normal_liver"]
    lesions = None if lesions is None else np.asarray(lesions)
    ids = [] if lesions is None else [int(i) for i in np.unique(lesions) if i > 0]
    if ids:
        lookup = np.zeros(max(ids) + 1, np.int32)
        lookup[ids] = np.arange(2, 2 + len(ids))
        labels = np.where(lesions > 0, lookup[lesions], labels)
        names += [f"lesion_{i}" for i in ids]
    return labels, names

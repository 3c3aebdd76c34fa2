"""Orthogonal slices for display: axial, coronal and sagittal planes with their physical extents.

A Volume is first reoriented (``sitk.DICOMOrient``, a permutation and flips of its axes, no
resampling) so that its array axes run closest to L, P, S. The planes shown are then the grid's
planes nearest to axial/coronal/sagittal; an oblique grid is shown in its own planes, not
resampled (the residual rotation is the grid's obliquity). Extents are in mm, so an image drawn
with ``aspect='equal'`` has the true physical aspect ratio for any anisotropic spacing.

Display conventions (radiological): axial seen from the feet (patient's right on the left of the
image, anterior up); coronal seen from the front (right on the left, superior up); sagittal seen
from the patient's left (anterior on the left, superior up).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk

from sirtjax.io import to_sitk
from sirtjax.volume import Volume, index_points_to_world

VIEWS = ("axial", "coronal", "sagittal")


@dataclasses.dataclass(frozen=True)
class Slice2D:
    """One display plane: image (rows, cols), imshow extent (left, right, bottom, top) in mm, origin, edge letters."""

    image: np.ndarray
    extent: tuple[float, float, float, float]
    origin: str  # 'upper' or 'lower', as matplotlib's imshow/contour expect
    letters: tuple[str, str, str, str]  # patient direction at the (left, right, bottom, top) edge


@dataclasses.dataclass(frozen=True)
class Oriented:
    """A Volume's array reoriented to LPS-nearest axes: array (z, y, x) and spacing (x, y, z) in mm."""

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    image: sitk.Image  # the reoriented SimpleITK image (for point -> index lookups)

    def index_of(self, point_mm) -> tuple[int, int, int]:
        """Nearest (x, y, z) voxel index of an LPS point in mm, clipped into the grid."""
        idx = self.image.TransformPhysicalPointToContinuousIndex(tuple(float(c) for c in point_mm))
        size = self.image.GetSize()
        return tuple(int(np.clip(round(i), 0, n - 1)) for i, n in zip(idx, size))

    def center_mm(self) -> tuple[float, float, float]:
        """LPS point (mm) at the middle of the grid."""
        mid = [(n - 1) / 2.0 for n in self.image.GetSize()]
        return self.image.TransformContinuousIndexToPhysicalPoint(mid)


def orient(vol: Volume) -> Oriented:
    """Reorient a scalar Volume to the LPS-nearest axis order by permuting/flipping (exact, no interpolation)."""
    img = sitk.DICOMOrient(to_sitk(vol), "LPS")
    return Oriented(sitk.GetArrayFromImage(img), tuple(img.GetSpacing()), img)


def plane(o: Oriented, view: str, index_xyz: tuple[int, int, int]) -> Slice2D:
    """The plane of view ('axial', 'coronal', 'sagittal') through voxel index_xyz of an oriented volume."""
    sx, sy, sz = o.spacing_mm
    nz, ny, nx = o.array.shape[:3]
    i, j, k = index_xyz
    # Extents span voxel edges: a voxel of index n covers [n - 0.5, n + 0.5] * spacing.
    ex = (-0.5 * sx, (nx - 0.5) * sx)
    ey = (-0.5 * sy, (ny - 0.5) * sy)
    ez = (-0.5 * sz, (nz - 0.5) * sz)
    if view == "axial":
        return Slice2D(o.array[k], (ex[0], ex[1], ey[1], ey[0]), "upper", ("R", "L", "P", "A"))
    if view == "coronal":
        return Slice2D(o.array[:, j, :], (ex[0], ex[1], ez[0], ez[1]), "lower", ("R", "L", "I", "S"))
    if view == "sagittal":
        return Slice2D(o.array[:, :, i], (ey[0], ey[1], ez[0], ez[1]), "lower", ("A", "P", "I", "S"))
    raise ValueError(f"view must be one of {VIEWS}, got {view!r}")


def mask_center_mm(vol: Volume) -> tuple[float, float, float] | None:
    """LPS centroid (mm) of the non-zero voxels of a label Volume, or None when it is empty."""
    idx = np.argwhere(np.asarray(vol.array) > 0)
    if idx.size == 0:
        return None
    ijk = idx.mean(axis=0)[::-1]  # (z, y, x) mean -> (x, y, z) index
    return tuple(float(c) for c in np.asarray(index_points_to_world(vol, ijk)))

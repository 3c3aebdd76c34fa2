"""Surface voxels and symmetric surface distances (ASSD, HD, HD95) by exact EDT (host, scipy).

Definitions (DESIGN.md "Metrics"):

- The surface of a mask is the set of voxels removed by one binary erosion with the 6-connected
  structuring element; voxels outside the image count as background, so an object touching the
  image border has a surface there.
- Distances go from every surface voxel of one mask to the nearest surface voxel of the other, in
  mm, by scipy's exact Euclidean distance transform with the voxel spacing.
- ASSD (the thesis' MSD) is the mean of the pooled distances of both directions; HD the largest
  distance; HD95 the larger of the two directions' 95th percentiles (linear interpolation).
- Empty masks: both empty -> every distance 0; exactly one empty -> distances from the non-empty
  surface are ``inf`` (there is nothing to reach), so ASSD, HD and HD95 are ``inf``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from sirtjax.metrics._inputs import MaskLike, as_pair, spacing_zyx

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Surface voxels (z, y, x) bool: those one 6-connected erosion removes; outside is background."""
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, structure=_SIX_CONNECTED, border_value=0)


def crop_box(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box (z, y, x slices) of the union of masks, padded by one voxel inside the image.

    Erosion and EDT inside this box equal those of the full image: the pad keeps the erosion's
    background where the image has one, and every surface voxel of either mask lies inside.
    An all-empty union gives an empty box.
    """
    union = np.zeros(masks[0].shape, bool)
    for m in masks:
        union |= m
    return pad_box(ndimage.find_objects(union.view(np.uint8))[0] if union.any() else None, union.shape)


def pad_box(box: tuple[slice, ...] | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A box (slices) grown by one voxel on each side, clipped to shape; None -> an empty box."""
    if box is None:
        return tuple(slice(0, 0) for _ in shape)
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape))


def directed_distances_mm(
    pred: np.ndarray, ref: np.ndarray, spacing_zyx_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float64) from pred's surface voxels to ref's surface and back.

    Args:
      pred, ref: bool masks of one shape (z, y, x); crop them with crop_box first for speed.
      spacing_zyx_mm: voxel spacing in array-axis order (z, y, x).

    Returns:
      (pred -> ref, ref -> pred), one distance per source surface voxel in C order; all ``inf``
      when the target mask is empty, empty arrays when the source mask is empty.
    """
    sp, sr = surface_mask(pred), surface_mask(ref)
    return _to_surface(sp, sr, spacing_zyx_mm), _to_surface(sr, sp, spacing_zyx_mm)


def _to_surface(source: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    if not target.any():
        return np.full(int(source.sum()), np.inf)
    return ndimage.distance_transform_edt(~target, sampling=spacing)[source]


@dataclasses.dataclass(frozen=True)
class SurfaceMetrics:
    """Symmetric surface distances of two masks in mm (``inf`` when exactly one mask is empty)."""

    assd_mm: float
    hd_mm: float
    hd95_mm: float
    msd_pred_to_ref_mm: float
    msd_ref_to_pred_mm: float


def summarise_distances(d_pred_to_ref: np.ndarray, d_ref_to_pred: np.ndarray) -> SurfaceMetrics:
    """ASSD, HD, HD95 and the directed means from the two directed distance arrays (mm)."""
    n1, n2 = d_pred_to_ref.size, d_ref_to_pred.size
    if n1 == 0 and n2 == 0:
        return SurfaceMetrics(0.0, 0.0, 0.0, 0.0, 0.0)
    if n1 == 0 or n2 == 0 or not (np.isfinite(d_pred_to_ref).all() and np.isfinite(d_ref_to_pred).all()):
        return SurfaceMetrics(math.inf, math.inf, math.inf, math.inf, math.inf)
    return SurfaceMetrics(
        assd_mm=float((d_pred_to_ref.sum() + d_ref_to_pred.sum()) / (n1 + n2)),
        hd_mm=float(max(d_pred_to_ref.max(), d_ref_to_pred.max())),
        hd95_mm=float(max(np.percentile(d_pred_to_ref, 95), np.percentile(d_ref_to_pred, 95))),
        msd_pred_to_ref_mm=float(d_pred_to_ref.mean()),
        msd_ref_to_pred_mm=float(d_ref_to_pred.mean()),
    )


def surface_metrics(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> SurfaceMetrics:
    """ASSD, HD, HD95 (mm) of two binary masks (nonzero = object) on one grid; see module doc.

    Args:
      pred, ref: two Volumes on one grid, or two (z, y, x) arrays plus ``spacing_mm`` in ITK
        (x, y, z) order.
    """
    p, r = as_pair(pred, ref, spacing_mm)
    pm, rm = np.asarray(p.array) != 0, np.asarray(r.array) != 0
    box = crop_box(pm, rm)
    return summarise_distances(*directed_distances_mm(pm[box], rm[box], spacing_zyx(p)))


def assd(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> float:
    """Average symmetric surface distance (the thesis' MSD) in mm; 0 if both empty, inf if one is."""
    return surface_metrics(pred, ref, spacing_mm=spacing_mm).assd_mm


def hausdorff(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> float:
    """Hausdorff distance between the two surfaces in mm; 0 if both empty, inf if one is."""
    return surface_metrics(pred, ref, spacing_mm=spacing_mm).hd_mm


def hausdorff95(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> float:
    """Max over both directions of the 95th percentile surface distance (mm); 0/inf on empties."""
    return surface_metrics(pred, ref, spacing_mm=spacing_mm).hd95_mm

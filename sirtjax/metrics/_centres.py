"""Mass centres in world coordinates and the mass-centre distance (MCD) of two masks (host)."""

from __future__ import annotations

import math

import numpy as np

from sirtjax.metrics._inputs import MaskLike, as_volume, centre_index_to_world


def box_centre_zyx(mask: np.ndarray, offset_zyx: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Mass centre (z, y, x) of a non-empty bool mask in array positions, plus its box offset."""
    n = mask.sum()
    centre = []
    for axis in range(3):
        profile = mask.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64)
        centre.append((profile * np.arange(profile.size)).sum() / n + offset_zyx[axis])
    return np.asarray(centre, np.float64)


def mass_centre_mm(mask: MaskLike, *, spacing_mm=None) -> np.ndarray:
    """World LPS centre (x, y, z) in mm of a binary mask's voxels (nonzero); ValueError if empty.

    A Volume uses its spacing, origin and direction; a plain (z, y, x) array needs ``spacing_mm``
    and is placed at origin 0 with identity direction.
    """
    vol = as_volume(mask, spacing_mm, "mask")
    m = np.asarray(vol.array) != 0
    if not m.any():
        raise ValueError("the mass centre of an empty mask is undefined")
    return centre_index_to_world(vol, box_centre_zyx(m))


def mcd(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> float:
    """Distance (mm) between the world mass centres of two binary masks; 0 if both empty, inf if one.

    Two Volumes may lie on different grids (centres are compared in world coordinates, so origin
    and direction matter); two plain arrays share ``spacing_mm`` (ITK (x, y, z) order).
    """
    p, r = as_volume(pred, spacing_mm, "pred"), as_volume(ref, spacing_mm, "ref")
    pm, rm = np.asarray(p.array) != 0, np.asarray(r.array) != 0
    if not pm.any() and not rm.any():
        return 0.0
    if not pm.any() or not rm.any():
        return math.inf
    cp = centre_index_to_world(p, box_centre_zyx(pm))
    cr = centre_index_to_world(r, box_centre_zyx(rm))
    return float(np.linalg.norm(cp - cr))

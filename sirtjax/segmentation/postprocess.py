"""Post-processing of probability maps (thesis 4.3.2, 7.3.2): threshold, components, holes.

Arrays are (z, y, x) numpy; connectivity is face connectivity (6 neighbours) throughout. Each step works inside
the bounding box of the mask's voxels, which gives the same result as the whole array (every voxel outside the box
is background, and a background voxel on the box's face touches that outside) in a fraction of the time on a
clinical grid (513 x 513 x 288 voxels: 8.2 s -> 1.1 s for the liver mask and its warnings).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def foreground_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (z, y, x slices) of a boolean mask's True voxels; None when it has none."""
    boxes = ndimage.find_objects(np.asarray(mask, bool).view(np.uint8))
    return boxes[0] if boxes else None


def _components(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]]:
    """(labels, count, box): the 6-connected components of a boolean mask labelled 1..count inside the bounding box
    ``box`` of its voxels (labels has the box's shape; an empty mask gives an empty box and count 0)."""
    box = foreground_box(mask) or tuple(slice(0, 0) for _ in mask.shape)
    labels, n = ndimage.label(mask[box])
    return labels, n, box


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 6-connected components of a boolean mask, largest first (empty for an empty mask)."""
    labels, n, _ = _components(np.asarray(mask, bool))
    return np.sort(np.bincount(labels.ravel())[1:])[::-1] if n else np.zeros(0, np.int64)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (z, y, x); empty in -> empty out."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    labels, n, box = _components(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        out[box] = labels == int(np.argmax(sizes))
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill cavities fully enclosed in 3D (scipy binary_fill_holes) of a boolean mask (z, y, x)."""
    out = np.array(mask, bool)
    box = foreground_box(out)
    if box is not None:
        out[box] = ndimage.binary_fill_holes(out[box])
    return out


def liver_mask(probability: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Liver mask (uint8 0/1) from a probability map: > threshold, largest component, holes filled."""
    return fill_holes(largest_component(np.asarray(probability) > threshold)).astype(np.uint8)


def instance_labels(probability: np.ndarray, *, threshold: float = 0.5, min_voxels: int = 1) -> np.ndarray:
    """Lesion instances (int32, 0 background, 1..n by decreasing size) from a probability map.

    Components of (probability > threshold) smaller than `min_voxels` are dropped; no lesion -> all 0.
    """
    mask = np.asarray(probability) > threshold
    out = np.zeros(mask.shape, np.int32)
    labels, n, box = _components(mask)
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        order = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
        lut = np.zeros(n + 1, np.int32)
        lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        out[box] = lut[labels]
    return out


PLAUSIBLE_LIVER_ML = (600.0, 4500.0)
LARGE_COMPONENT_ML = 50.0


def liver_warnings(probability: np.ndarray, voxel_ml: float, *, threshold: float = 0.5) -> list[str]:
    """One-line warnings for an implausible liver prediction: volume (of the kept largest component)
    outside PLAUSIBLE_LIVER_ML, or more than one component of at least LARGE_COMPONENT_ML before
    the largest is kept."""
    sizes_ml = component_sizes(np.asarray(probability) > threshold) * float(voxel_ml)
    kept_ml = float(sizes_ml[0]) if sizes_ml.size else 0.0
    out = []
    lo, hi = PLAUSIBLE_LIVER_ML
    if not lo <= kept_ml <= hi:
        out.append(f"implausible liver volume {kept_ml:.0f} ml (expected {lo:.0f}-{hi:.0f} ml): check the image, its modality and the result")
    large = int(np.sum(sizes_ml >= LARGE_COMPONENT_ML))
    if large > 1:
        out.append(f"the prediction has {large} components of >= {LARGE_COMPONENT_ML:.0f} ml; only the largest ({kept_ml:.0f} ml) was kept")
    return out

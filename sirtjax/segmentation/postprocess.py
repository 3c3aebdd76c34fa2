"""Post-processing of probability maps (thesis 4.3.2, 7.3.2): threshold, components, holes.

Arrays are (z, y, x) numpy; connectivity is face connectivity (6 neighbours) throughout.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (z, y, x); empty in -> empty out."""
    labels, n = ndimage.label(np.asarray(mask, bool))
    if n == 0:
        return np.zeros(labels.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill cavities fully enclosed in 3D (scipy binary_fill_holes) of a boolean mask (z, y, x)."""
    return ndimage.binary_fill_holes(np.asarray(mask, bool))


def liver_mask(probability: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Liver mask (uint8 0/1) from a probability map: > threshold, largest component, holes filled."""
    return fill_holes(largest_component(np.asarray(probability) > threshold)).astype(np.uint8)


def instance_labels(probability: np.ndarray, *, threshold: float = 0.5, min_voxels: int = 1) -> np.ndarray:
    """Lesion instances (int32, 0 background, 1..n by decreasing size) from a probability map.

    Components of (probability > threshold) smaller than `min_voxels` are dropped; no lesion -> all 0.
    """
    labels, n = ndimage.label(np.asarray(probability) > threshold)
    if n == 0:
        return np.zeros(labels.shape, np.int32)
    sizes = np.bincount(labels.ravel())[1:]
    order = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    lut = np.zeros(n + 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels]

"""Initialisation of the affine stage: centres of mass and candidate starts.

The initial translation aligns centres of mass (world mm): of the masks / label maps when given,
otherwise of a body mask thresholded at Otsu's level (robust for CT and MR alike; raw intensities
would let air, at -1000 HU, weigh negative). Fields of view often differ along the patient axis
(a diagnostic scan covering the abdomen against a short MAA CT), which shifts the body centroid, so
the coarsest level tries a few candidate starts along world z and keeps the best.
"""

from __future__ import annotations

import numpy as np

from sirtjax.volume import Volume, corner_points_world, index_moments, index_to_world


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (same units as values) maximising the between-class variance; constant input -> its value."""
    v = np.asarray(values, np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def body_mask(image: np.ndarray) -> np.ndarray:
    """Voxels above Otsu's threshold (z, y, x) bool: the body against air on CT and MR."""
    return np.asarray(image) > otsu_threshold(image)


def rms_radius_mm(vol: Volume, weights: np.ndarray, centre_mm: np.ndarray) -> float:
    """RMS distance (mm) of the weighted voxels from centre_mm; of the whole grid if all weights are 0."""
    total, mean, second = index_moments(weights)
    if total <= 0:
        total, mean, second = index_moments(np.ones(vol.shape, np.float64))
    # p = R v + o for index v: E|p - c|^2 = tr(Rᵀ R E[v vᵀ]) + 2 (o - c)ᵀ R E[v] + |o - c|^2
    to_world = index_to_world(vol)
    rot, offset = to_world[:3, :3], to_world[:3, 3] - np.asarray(centre_mm, np.float64)
    mean_sq = np.trace(rot.T @ rot @ second) + 2 * offset @ rot @ mean + offset @ offset
    return float(max(np.sqrt(max(mean_sq, 0.0)), 1.0))


def candidate_translations(base_mm: np.ndarray, extent_z_mm: float, n: int) -> np.ndarray:
    """n starting translations (n, 3) mm: base, then base +- k * 10 % of the fixed z extent (k = 1, 2, ...)."""
    offsets = [0.0]
    k = 1
    while len(offsets) < n:
        offsets += [k * 0.1 * extent_z_mm, -k * 0.1 * extent_z_mm]
        k += 1
    out = np.repeat(np.asarray(base_mm, np.float64)[None], n, axis=0)
    out[:, 2] += np.asarray(offsets[:n])
    return out


def z_extent_mm(vol: Volume) -> float:
    """Extent (mm) of the grid along world z (the patient axis in LPS)."""
    z = corner_points_world(vol)[:, 2]
    return float(z.max() - z.min())

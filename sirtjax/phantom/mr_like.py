"""MR-like images made from a CT, as the held-out MR-like -> CT test pairs were made from a real CT: one T1-like
intensity per HU, with Rician noise. Used by the registration and segmentation benchmarks."""

from __future__ import annotations

import numpy as np

from sirtjax.volume import Volume

HU_POINTS = (-1000, -500, -120, -60, 0, 30, 60, 100, 200, 400, 1500)
T1_LIKE_POINTS = (0, 20, 850, 800, 150, 250, 420, 380, 300, 120, 80)  # fat bright, liver above muscle, fluid and bone dark
RICIAN_SIGMA = 15.0


def mr_like(ct: Volume, rng: np.random.Generator) -> Volume:
    """A T1-like MR made from a CT in HU by a fixed piecewise-linear map (fat bright, liver above muscle, fluid and
    bone dark, air black) with Rician noise, on the CT's grid. Approximate: one intensity per HU, so the anatomy and
    the contrasts between tissues are the CT's own."""
    img = np.interp(np.asarray(ct.array, np.float64), HU_POINTS, T1_LIKE_POINTS)
    noisy = np.abs(img + rng.normal(0, RICIAN_SIGMA, img.shape) + 1j * rng.normal(0, RICIAN_SIGMA, img.shape))
    return ct.with_array(noisy.astype(np.float32))

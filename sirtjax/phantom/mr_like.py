"""MR-like images made from a CT, as the held-out MR-like -> CT test pairs were made from a real CT: one T1-like
intensity per HU, with Rician noise, or a random intensity per HU. Used by the registration and segmentation
benchmarks."""

from __future__ import annotations

import numpy as np

from sirtjax.volume import Volume

HU_POINTS = (-1000, -500, -120, -60, 0, 30, 60, 100, 200, 400, 1500)
T1_LIKE_POINTS = (0, 20, 850, 800, 150, 250, 420, 380, 300, 120, 80)  # fat bright, liver above muscle, fluid and bone dark
RICIAN_SIGMA = 15.0
RANDOM_MAX = 1000.0  # random_contrast draws each knot's intensity in [0, this]


def mr_like(ct: Volume, rng: np.random.Generator) -> Volume:
    """A T1-like MR made from a CT in HU by a fixed piecewise-linear map (fat bright, liver above muscle, fluid and
    bone dark, air black) with Rician noise, on the CT's grid. Approximate: one intensity per HU, so the anatomy and
    the contrasts between tissues are the CT's own."""
    return ct.with_array(_rician(np.interp(np.asarray(ct.array, np.float64), HU_POINTS, T1_LIKE_POINTS), RICIAN_SIGMA, rng))


def random_contrast(ct: Volume, rng: np.random.Generator) -> Volume:
    """An image made from a CT in HU by a random piecewise-linear map: a uniform random intensity in [0, RANDOM_MAX] at
    each of HU_POINTS (air, the first two, below 5 % of it), with Rician noise of 3 % of the brightest knot. A test of
    contrast invariance wider than :func:`mr_like`'s one map; some draws leave the liver barely distinguishable from
    its neighbours, as no real sequence does."""
    values = rng.uniform(0.0, RANDOM_MAX, len(HU_POINTS))
    values[:2] = rng.uniform(0.0, 0.05 * RANDOM_MAX, 2)
    return ct.with_array(_rician(np.interp(np.asarray(ct.array, np.float64), HU_POINTS, values), 0.03 * values.max(), rng))


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|signal + complex Gaussian noise of std sigma per channel| as float32: an MR magnitude image."""
    return np.abs(signal + rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape)).astype(np.float32)

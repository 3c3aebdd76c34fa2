"""Other contrasts made from a CT, as the held-out MR-like -> CT test pairs were made from a real CT: one T1-like
intensity per HU, with Rician noise, a random intensity per HU, or the CT without its contrast enhancement. Used by
the registration and segmentation benchmarks and the real-scan validation."""

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


NON_CONTRAST_KNOTS_HU = ((-1000.0, 10.0, 60.0, 130.0, 250.0, 400.0), (-1000.0, 10.0, 40.0, 58.0, 70.0, 400.0))


def non_contrast_like(ct: Volume) -> Volume:
    """A contrast CT without its enhancement: a piecewise-linear map of HU (NON_CONTRAST_KNOTS_HU) that leaves air, fat,
    water and bone and pulls enhanced soft tissue down, an enhanced liver of 110-130 HU to 53-58 HU, as native liver
    reads. Approximate: one map for all soft tissue; enhanced vessels stay a little brighter than the liver, where a
    real non-contrast CT shows them darker."""
    hu = np.asarray(ct.array, np.float32)
    knots_in, knots_out = NON_CONTRAST_KNOTS_HU
    inside = (hu > knots_in[0]) & (hu < knots_in[-1])
    return ct.with_array(np.where(inside, np.interp(hu, knots_in, knots_out), hu).astype(np.float32))


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

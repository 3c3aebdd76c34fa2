"""Activity maps (GBq per voxel) from SPECT counts or PET Bq/ml, and uptake measured from counts.

Arrays are (z, y, x); spacing (x, y, z) mm; masks are boolean (non-zero = inside). Activity is the
administered, time-zero activity: cumulated activity under permanent trapping follows from the
constant set (:attr:`~sirtjax.dosimetry.constants.DoseConstants.decays_per_gbq`).

- SPECT (99mTc-MAA, planning): the counts inside the liver are normalised to sum 1 and multiplied by
  the activity reaching the liver, ``(1 - LSF) * A``; voxels outside the liver get no activity (the
  shunted part goes to the lungs, whose dose is the lung-dose formula, not a voxel map).
- PET (90Y, verification): Bq/ml times the voxel volume. A PET image carries negative noise
  values after some reconstructions; they are set to zero and the removed activity is returned so
  that reports can state it. The image must be decay corrected to the administration time for
  the dose to cover the whole decay (otherwise it is the dose from the scan time on).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.dosimetry.dose import voxel_volume_ml
from sirtjax.plausibility import ResultWarning


def activity_from_counts(
    counts: jax.Array,
    liver_mask: jax.Array,
    *,
    activity_gbq: float,
    lung_shunt_fraction: float = 0.0,
) -> jax.Array:
    """GBq per voxel (float32, (z, y, x)): liver counts normalised to 1 times (1 - LSF) * activity_gbq.

    Raises ValueError for an empty liver mask, negative counts in the liver, zero liver counts, a
    non-positive activity or an LSF outside [0, 1).
    """
    if not np.isfinite(activity_gbq) or activity_gbq <= 0:
        raise ValueError(f"the administered activity must be positive, got {activity_gbq} GBq")
    counts = jnp.asarray(counts, jnp.float32)
    inside = jnp.asarray(liver_mask).astype(bool)
    if counts.shape != inside.shape:
        raise ValueError(f"counts {counts.shape} and liver mask {inside.shape} differ in shape")
    n_inside, total, lowest = jax.device_get(
        (jnp.sum(inside), jnp.sum(jnp.where(inside, counts, 0.0)), jnp.min(jnp.where(inside, counts, 0.0)))
    )
    if n_inside == 0:
        raise ValueError("the liver mask is empty")
    if lowest < 0:
        raise ValueError(f"the counts are negative inside the liver (minimum {lowest:g})")
    if not total > 0:
        raise ValueError("the counts are zero everywhere inside the liver")
    if not 0.0 <= lung_shunt_fraction < 1.0:
        raise ValueError(f"the lung shunt fraction must be in [0, 1), got {lung_shunt_fraction}")
    liver_gbq = (1.0 - lung_shunt_fraction) * activity_gbq
    return jnp.where(inside, counts * jnp.float32(liver_gbq / total), 0.0)


def activity_from_bq_per_ml(pet_bq_ml: jax.Array, spacing_mm) -> tuple[jax.Array, float]:
    """GBq per voxel (float32, (z, y, x)) from a PET image in Bq/ml; negatives set to 0.

    Returns the map and the activity removed with the negative values (GBq, >= 0).
    """
    pet = jnp.asarray(pet_bq_ml, jnp.float32)
    scale = jnp.float32(voxel_volume_ml(spacing_mm) * 1e-9)
    removed = float(-jnp.sum(jnp.minimum(pet, 0.0)) * scale)
    return jnp.maximum(pet, 0.0) * scale, removed


def lung_shunt_fraction(lung_counts: float, liver_counts: float) -> float:
    """LSF = lung / (lung + liver) counts (for planar images pass geometric means of AP and PA counts)."""
    lung, liver = float(lung_counts), float(liver_counts)
    if lung < 0 or liver < 0 or not np.isfinite(lung + liver):
        raise ValueError(f"counts must be finite and non-negative, got lung {lung}, liver {liver}")
    if lung + liver <= 0:
        raise ValueError("lung and liver counts are both zero")
    return lung / (lung + liver)


@dataclasses.dataclass(frozen=True)
class LungShunt:
    """The lung shunt fraction a prescription uses, where it came from, and what the user must know about it."""

    fraction: float
    source: str
    warnings: tuple[ResultWarning, ...] = ()


def choose_lung_shunt(given: float | None, given_source: str, from_spect: float | None, *, lungs_cut: bool = False,
                      spect_source: str = "SPECT counts in the lung and liver masks") -> LungShunt:
    """The one precedence for the lung shunt fraction: the given one (planar scintigraphy, the clinical standard, or
    lung and liver counts), else the SPECT's counts in the lung and liver masks (with a warning when the lung mask
    reaches the CT's field of view, which then cuts the lungs and underestimates it), else 0 with a warning."""
    if given is not None:
        return LungShunt(float(given), given_source)
    if from_spect is not None:
        cut = (ResultWarning("lung_mask_cut", "the lung mask reaches the edge of the CT field of view: the lungs are cut "
                             "and the LSF from SPECT counts is underestimated; give the planar LSF"),) if lungs_cut else ()
        return LungShunt(float(from_spect), spect_source, cut)
    return LungShunt(0.0, "assumed 0", (ResultWarning("lung_shunt_assumed_zero", "no planar LSF and no lung mask: the "
                                                      "lung shunt fraction is taken as 0", 0.0),))


def tumour_to_normal_ratios(
    tumour_counts: np.ndarray, tumour_volume_ml: np.ndarray, normal_counts: float, normal_volume_ml: float
) -> np.ndarray:
    """T/N ratios (thesis eq. 1.7): count concentration of each tumour over that of normal liver."""
    tc, tv = np.asarray(tumour_counts, float), np.asarray(tumour_volume_ml, float)
    if normal_volume_ml <= 0 or normal_counts <= 0:
        raise ValueError("normal liver has no volume or no counts, so T/N ratios are undefined")
    if np.any(tv <= 0):
        raise ValueError("a tumour has no volume, so its T/N ratio is undefined")
    return (tc / tv) / (normal_counts / normal_volume_ml)

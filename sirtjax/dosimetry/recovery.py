"""Partial-volume recovery of small lesions in 90Y PET, and resolution matching of SPECT and PET.

A reconstructed PET blurs a small hot lesion: the mean activity concentration measured in the
lesion's true outline is its true concentration times a recovery coefficient RC(volume) < 1. A
lesion's measured mean is corrected by dividing it by RC at the lesion's volume.

- :class:`RecoveryCurve` holds RC against sphere volume. A measured curve is interpolated linearly
  in log(volume) and held constant beyond the measured spheres, with a warning there; the analytic
  curve is evaluated at the lesion's own volume. Two sources:
  - :func:`read_recovery_csv`: the user's sphere-phantom measurement (a NEMA/IEC body phantom).
  - :func:`gaussian_recovery_curve`: the analytic default for a stated FWHM. A uniform sphere is
    convolved with an isotropic Gaussian point-spread function, and the result is averaged over
    the sphere (:func:`sphere_recovery_coefficient`), at the IEC phantom's six sphere diameters
    (10, 13, 17, 22, 28 and 37 mm; NEMA NU 2).
- :func:`checked_recovery_curve`: the curve of the command line's resolution options, after checking them.
- :func:`recovery_correction`: every lesion's RC and corrected mean dose under a curve.
- :func:`match_resolution`: the Gaussian that brings an image of resolution FWHM a to FWHM b > a,
  sigma = sqrt(b^2 - a^2) / (2 sqrt(2 ln 2)) in mm, so that the MAA SPECT and the 90Y PET are
  compared at a common resolution.

Approximations: a real PSF is neither Gaussian nor stationary, and the reconstruction's
convergence changes it; the analytic curve is a model, and a measured curve is better. The
correction rescales the lesion's mean only. It does not move the spilled-out activity back into
the lesion.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import integrate, ndimage, special

from sirtjax.errors import InputError
from sirtjax.plausibility import ResultWarning
from sirtjax.volume import Volume

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
IEC_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)  # NEMA NU 2 / IEC 61675-1 body phantom


def sphere_volume_ml(diameter_mm: float) -> float:
    """Volume (ml) of a sphere of the given diameter (mm)."""
    return math.pi * diameter_mm**3 / 6.0 / 1000.0


def sphere_recovery_coefficient(volume_ml: float, fwhm_mm: float) -> float:
    """Mean recovery of a uniform sphere (volume in ml) blurred by an isotropic Gaussian PSF, over its own outline.

    The blurred profile at distance r from the centre of a sphere of radius R is
    1/2 [erf((R - r)/(s sqrt 2)) + erf((R + r)/(s sqrt 2))]
    - s / (r sqrt(2 pi)) [exp(-(R - r)^2 / (2 s^2)) - exp(-(R + r)^2 / (2 s^2))],
    where s is the PSF's sigma. Its volume mean over the sphere is integrated numerically.
    """
    if volume_ml <= 0 or fwhm_mm <= 0:
        raise ValueError("the volume and the FWHM must be positive")
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    s = fwhm_mm / FWHM_PER_SIGMA
    k = s * math.sqrt(2.0)

    def profile_r2(r: float) -> float:
        plateau = 0.5 * (special.erf((radius - r) / k) + special.erf((radius + r) / k))
        edge = s / math.sqrt(2.0 * math.pi) * (math.exp(-((radius - r) ** 2) / k**2) - math.exp(-((radius + r) ** 2) / k**2))
        return plateau * r * r - edge * r  # r^2 c(r), finite at r = 0

    return 3.0 * integrate.quad(profile_r2, 0.0, radius, limit=200)[0] / radius**3


@dataclasses.dataclass(frozen=True)
class RecoveryCurve:
    """Recovery coefficient against sphere volume (ml, increasing), and where the numbers come from."""

    volume_ml: tuple[float, ...]
    recovery: tuple[float, ...]
    source: str
    fwhm_mm: float | None = None  # set for the analytic curve: the coefficient is then exact at any volume

    def __post_init__(self):
        v, rc = np.asarray(self.volume_ml, float), np.asarray(self.recovery, float)
        if v.shape != rc.shape or v.size < 2:
            raise ValueError("a recovery curve needs at least two (volume, coefficient) pairs")
        if not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(np.diff(v) > 0)):
            raise ValueError("sphere volumes must be positive and strictly increasing")
        if not (np.all(np.isfinite(rc)) and np.all(rc > 0) and np.all(rc <= 1.5)):
            raise ValueError("recovery coefficients must lie in (0, 1.5]")

    def coefficient(self, volume_ml: float) -> float:
        """RC at a lesion volume (ml): the analytic curve's own value, else linear in log volume between the measured
        spheres and held at the end values outside them."""
        if self.fwhm_mm is not None:
            return sphere_recovery_coefficient(volume_ml, self.fwhm_mm)
        return float(np.interp(math.log(volume_ml), np.log(self.volume_ml), self.recovery))

    def covers(self, volume_ml: float) -> bool:
        """Whether RC at volume_ml is known: always for the analytic curve, else between the smallest and largest spheres."""
        return self.fwhm_mm is not None or self.volume_ml[0] <= volume_ml <= self.volume_ml[-1]


def gaussian_recovery_curve(fwhm_mm: float, diameters_mm: Sequence[float] = IEC_SPHERE_DIAMETERS_MM) -> RecoveryCurve:
    """The analytic recovery curve of a Gaussian PSF of fwhm_mm at the given sphere diameters (module docstring)."""
    volumes = [sphere_volume_ml(d) for d in sorted(diameters_mm)]
    return RecoveryCurve(tuple(volumes), tuple(sphere_recovery_coefficient(v, fwhm_mm) for v in volumes),
                         f"analytic: a uniform sphere of the lesion's volume convolved with an isotropic Gaussian PSF of "
                         f"FWHM {fwhm_mm:g} mm, mean over the sphere (tabulated at diameters "
                         f"{', '.join(f'{d:g}' for d in sorted(diameters_mm))} mm)", fwhm_mm)


def read_recovery_csv(path: Path) -> RecoveryCurve:
    """A measured recovery curve from a CSV with columns volume_ml and recovery_coefficient; InputError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        pairs = sorted((float(r["volume_ml"]), float(r["recovery_coefficient"])) for r in rows)
        return RecoveryCurve(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), f"measured: {path}")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the recovery curve: {exc}") from None
    except (KeyError, TypeError):
        raise InputError(path, "expected the columns volume_ml and recovery_coefficient") from None
    except ValueError as exc:
        raise InputError(path, f"bad recovery curve: {exc}") from None


def checked_recovery_curve(fwhm_mm: dict[str, float | None], match_fwhm_mm: float | None,
                           recovery_csv: Path | None) -> RecoveryCurve | None:
    """The lesions' recovery curve of a dose (None: no correction), after checking the resolution options of
    ``sirtjax dose``, ``plan`` and ``verify`` (docs/pet-quantification.md).

    ``fwhm_mm``: each image's resolution option (its name to its value), the dose's own image first. The curve is the
    CSV's, else the analytic one at the resolution the dose is computed at (``--match-fwhm-mm``, else the first
    image's), else None. Raises InputError naming the option: a resolution outside (0, 100) mm, a match without every
    image's resolution or sharper than one of them (it only blurs), or a measured curve with a match (it holds at the
    scanner's resolution).
    """
    for option, value in (*fwhm_mm.items(), ("--match-fwhm-mm", match_fwhm_mm)):
        if value is not None and not 0 < value < 100:  # NaN fails this too
            raise InputError(option, f"a resolution in (0, 100) mm, got {value:g}")
    if match_fwhm_mm is not None and any(v is None or match_fwhm_mm < v for v in fwhm_mm.values()):
        raise InputError("--match-fwhm-mm", f"needs {' and '.join(fwhm_mm)}, and a target no sharper than "
                                            f"{'either' if len(fwhm_mm) > 1 else 'it'} (it only blurs)")
    if match_fwhm_mm is not None and recovery_csv is not None:
        raise InputError("--recovery-csv", "a measured curve holds at the scanner's resolution, not after "
                                           "--match-fwhm-mm blurs the image (without the CSV, the analytic curve follows)")
    resolution = match_fwhm_mm or next(iter(fwhm_mm.values()))  # of the image the dose is computed from
    return read_recovery_csv(recovery_csv) if recovery_csv else gaussian_recovery_curve(resolution) if resolution else None


def match_resolution(vol: Volume, fwhm_mm: float, target_fwhm_mm: float) -> Volume:
    """vol (resolution fwhm_mm) blurred to target_fwhm_mm with an isotropic Gaussian in mm; 0 outside the field of view."""
    if not 0 < fwhm_mm <= target_fwhm_mm:
        raise ValueError(f"resolution matching blurs only: FWHM {fwhm_mm:g} mm to {target_fwhm_mm:g} mm")
    sigma_mm = math.sqrt(target_fwhm_mm**2 - fwhm_mm**2) / FWHM_PER_SIGMA
    if sigma_mm == 0:
        return vol
    sigma_zyx = sigma_mm / np.asarray(vol.spacing_mm, float)[::-1]  # an isotropic Gaussian: any orthonormal axes
    return vol.with_array(ndimage.gaussian_filter(np.asarray(vol.array, np.float32), sigma_zyx, mode="constant",
                                                  truncate=5.0))


@dataclasses.dataclass(frozen=True)
class LesionRecovery:
    """One lesion's recovery correction: RC at its volume, its mean dose (Gy) measured and divided by RC."""

    name: str
    volume_ml: float
    coefficient: float
    mean_gy: float
    corrected_mean_gy: float
    within_curve: bool  # False: outside the measured spheres (RC held at the nearest one)


def lesion_recovery(vois: Sequence[dict], curve: RecoveryCurve) -> list[LesionRecovery]:
    """Recovery-corrected mean doses of the ``lesion_*`` records of a dose report (name, volume_ml, mean_gy)."""
    out = []
    for v in vois:
        if v["name"].startswith("lesion_") and v["mean_gy"] is not None and v["volume_ml"] > 0:
            rc = curve.coefficient(v["volume_ml"])
            out.append(LesionRecovery(v["name"], v["volume_ml"], rc, v["mean_gy"], v["mean_gy"] / rc, curve.covers(v["volume_ml"])))
    return out


@dataclasses.dataclass(frozen=True)
class RecoveryCorrection:
    """The lesions' recovery correction of a dose under ``curve`` (a dose report's ``recovery`` entry)."""

    curve: RecoveryCurve
    lesions: tuple[LesionRecovery, ...]

    @property
    def warnings(self) -> tuple[ResultWarning, ...]:
        """A warning naming the lesions outside the curve's spheres (their coefficient is the nearest sphere's)."""
        outside = [r for r in self.lesions if not r.within_curve]
        if not outside:
            return ()
        return (ResultWarning("lesion_outside_recovery_curve", f"{', '.join(r.name for r in outside)}: outside the "
                              f"spheres of the recovery curve ({self.curve.volume_ml[0]:.3g}-{self.curve.volume_ml[-1]:.3g}"
                              " ml); the nearest sphere's coefficient is used", float(len(outside))),)

    def to_dict(self) -> dict:
        """The JSON-ready entry: the curve's source, sphere volumes (ml) and coefficients, and each lesion's correction."""
        return {"source": self.curve.source, "volume_ml": self.curve.volume_ml, "coefficient": self.curve.recovery,
                "lesions": list(self.lesions)}


def recovery_correction(vois: Sequence[dict], curve: RecoveryCurve) -> RecoveryCorrection:
    """The recovery correction of a dose's VOI records (name, volume_ml, mean_gy) under ``curve``."""
    return RecoveryCorrection(curve, tuple(lesion_recovery(vois, curve)))


def recovery_report(vois: Sequence[dict], curve: RecoveryCurve) -> tuple[dict, tuple[ResultWarning, ...]]:
    """A dose report's ``recovery`` entry for its lesion records under ``curve``, and a warning naming the lesions
    outside its spheres (their coefficient is the nearest sphere's)."""
    correction = recovery_correction(vois, curve)
    return correction.to_dict(), correction.warnings

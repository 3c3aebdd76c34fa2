"""Activity prescription: mono-compartment (MIRD), partition (multi-compartment) and BSA methods.

Units: activity in GBq (administered, time-zero), masses in kg, volumes in ml, densities in g/ml,
doses in Gy (mean dose of a compartment under local deposition, permanent trapping). ``F`` is the
constant set's dose factor in Gy*kg/GBq (:mod:`sirtjax.dosimetry.constants`). A fraction LSF of the
activity shunts to the lungs; ``(1 - LSF) * A`` reaches the liver.

- Mono-compartment (thesis eq. 1.4): ``A = D * M / (F * (1 - LSF))``.
- Partition (thesis eq. 1.5-1.9), any number of tumours: with tumour-to-normal concentration
  ratios ``TN_i`` and masses ``M_i``, the fractional uptakes are ``FU_i = TN_i M_i / S`` and
  ``FU_N = M_N / S`` with ``S = sum_j TN_j M_j + M_N`` (the thesis writes volumes; one density
  for all compartments makes them proportional). The activity giving the normal liver the dose
  ``D_N`` is ``A = D_N * S / (F * (1 - LSF))``, and each tumour receives ``TN_i * D_N``.
- BSA (resin spheres): ``BSA = 0.20247 * H^0.725 * W^0.425`` (m^2, height H in m, weight W in kg),
  ``A = BSA - 0.2 + V_T / (V_T + V_N)`` (tumour and normal-liver volumes), times the resin
  instructions' shunt reduction (LSF <= 10 %: 1, <= 15 %: 0.8, <= 20 %: 0.6; above 20 % treatment is
  contraindicated: the 0.6 factor is kept and a warning raised).
- Lung dose: ``F * LSF * A / M_lung`` (M_lung 1 kg by convention unless measured).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML, LUNG_MASS_KG, DoseConstants, get_constants
from sirtjax.dosimetry.limits import check_lung_dose, check_lung_shunt
from sirtjax.plausibility import ResultWarning

_RESIN_LSF_REDUCTION = ((0.10, 1.0), (0.15, 0.8), (0.20, 0.6))


@dataclasses.dataclass(frozen=True)
class Compartment:
    """One compartment of a prescription: mass (kg), T/N ratio, fractional uptake, activity (GBq), mean dose (Gy)."""

    name: str
    mass_kg: float
    tn_ratio: float | None
    fractional_uptake: float
    activity_gbq: float
    dose_gy: float


@dataclasses.dataclass(frozen=True)
class Prescription:
    """An administered activity with the resulting compartment and lung doses and any warnings."""

    method: str
    activity_gbq: float
    lung_shunt_fraction: float
    lung_mass_kg: float
    lung_dose_gy: float
    compartments: tuple[Compartment, ...]
    constants: DoseConstants
    warnings: tuple[ResultWarning, ...]
    details: dict

    @property
    def liver_activity_gbq(self) -> float:
        """Activity reaching the liver, (1 - LSF) * A."""
        return (1.0 - self.lung_shunt_fraction) * self.activity_gbq

    def to_dict(self) -> dict:
        """JSON-ready form (constants and warnings included)."""
        return {
            "method": self.method,
            "activity_gbq": self.activity_gbq,
            "liver_activity_gbq": self.liver_activity_gbq,
            "lung_shunt_fraction": self.lung_shunt_fraction,
            "lung_mass_kg": self.lung_mass_kg,
            "lung_dose_gy": self.lung_dose_gy,
            "compartments": [dataclasses.asdict(c) for c in self.compartments],
            "constants": self.constants.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "details": self.details,
        }


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _check_lsf(lsf: float) -> float:
    lsf = float(lsf)
    if not 0.0 <= lsf < 1.0:
        raise ValueError(f"the lung shunt fraction must be in [0, 1), got {lsf}")
    return lsf


def lung_dose_gy(activity_gbq: float, lung_shunt_fraction: float, lung_mass_kg: float = LUNG_MASS_KG,
                 constants: str | DoseConstants = "icrp107") -> float:
    """Mean lung dose (Gy) of the shunted activity: F * LSF * A / M_lung."""
    c = get_constants(constants)
    mass = _check_positive("lung mass", lung_mass_kg)
    return c.gy_kg_per_gbq * _check_lsf(lung_shunt_fraction) * float(activity_gbq) / mass


def _finish(method: str, activity: float, lsf: float, lung_mass_kg: float, comps: list[Compartment],
            c: DoseConstants, details: dict, extra: Sequence[ResultWarning] = ()) -> Prescription:
    lung = lung_dose_gy(activity, lsf, lung_mass_kg, c)
    warnings = tuple(check_lung_shunt(lsf)) + tuple(check_lung_dose(lung)) + tuple(extra)
    return Prescription(method, activity, lsf, lung_mass_kg, lung, tuple(comps), c, warnings, details)


def mono_compartment(target_dose_gy: float, target_mass_kg: float, *, lung_shunt_fraction: float = 0.0,
                     lung_mass_kg: float = LUNG_MASS_KG, constants: str | DoseConstants = "icrp107") -> Prescription:
    """Activity (GBq) giving the target (whole liver or a lobe) a mean dose D: D * M / (F * (1 - LSF))."""
    c = get_constants(constants)
    dose = _check_positive("target dose", target_dose_gy)
    mass = _check_positive("target mass", target_mass_kg)
    lsf = _check_lsf(lung_shunt_fraction)
    activity = dose * mass / (c.gy_kg_per_gbq * (1.0 - lsf))
    comp = Compartment("target", mass, None, 1.0, (1.0 - lsf) * activity, dose)
    return _finish("mono-compartment", activity, lsf, _check_positive("lung mass", lung_mass_kg), [comp], c, {})


def partition(normal_dose_gy: float, normal_mass_kg: float, tumour_masses_kg: Sequence[float],
              tn_ratios: Sequence[float], *, lung_shunt_fraction: float = 0.0, lung_mass_kg: float = LUNG_MASS_KG,
              constants: str | DoseConstants = "icrp107", tumour_names: Sequence[str] | None = None) -> Prescription:
    """Partition-model activity (GBq) giving normal liver the dose D_N, for any number of tumours."""
    c = get_constants(constants)
    d_n = _check_positive("normal-liver dose", normal_dose_gy)
    m_n = _check_positive("normal-liver mass", normal_mass_kg)
    m_t = [_check_positive("tumour mass", m) for m in tumour_masses_kg]
    tn = [_check_positive("T/N ratio", r) for r in tn_ratios]
    if len(m_t) != len(tn):
        raise ValueError(f"{len(m_t)} tumour masses but {len(tn)} T/N ratios")
    names = list(tumour_names) if tumour_names is not None else [f"tumour_{i + 1}" for i in range(len(m_t))]
    if len(names) != len(m_t):
        raise ValueError(f"{len(names)} tumour names for {len(m_t)} tumours")
    lsf = _check_lsf(lung_shunt_fraction)
    weighted = float(np.dot(tn, m_t)) + m_n  # S = sum TN_j M_j + M_N
    liver_gbq = d_n * weighted / c.gy_kg_per_gbq
    activity = liver_gbq / (1.0 - lsf)
    comps = [Compartment("normal_liver", m_n, 1.0, m_n / weighted, liver_gbq * m_n / weighted, d_n)]
    comps += [Compartment(name, m, r, r * m / weighted, liver_gbq * r * m / weighted, r * d_n)
              for name, m, r in zip(names, m_t, tn)]
    return _finish("partition", activity, lsf, _check_positive("lung mass", lung_mass_kg), comps, c, {})


HEIGHT_RANGE_M = (0.5, 2.5)  # a patient's height: beyond it, a value in other units (cm given as m)
WEIGHT_RANGE_KG = (10.0, 350.0)


def body_size_problem(height_m: float, weight_kg: float) -> tuple[str, str] | None:
    """('height' or 'weight', why) when a body size lies outside HEIGHT_RANGE_M or WEIGHT_RANGE_KG, else None."""
    for what, value, (lo, hi), unit, hint in (("height", height_m, HEIGHT_RANGE_M, "m", " (in metres: 1.75, not 175)"),
                                              ("weight", weight_kg, WEIGHT_RANGE_KG, "kg", " (in kilograms)")):
        if not (math.isfinite(value) and lo <= value <= hi):
            return what, f"{value:g} {unit} is no patient's {what}: expected {lo:g}-{hi:g} {unit}{hint}"
    return None


def body_surface_area_m2(height_m: float, weight_kg: float) -> float:
    """Body surface area (m^2) from height (m) and weight (kg): 0.20247 * H^0.725 * W^0.425 (Du Bois); ValueError for
    a body size outside HEIGHT_RANGE_M or WEIGHT_RANGE_KG."""
    if (problem := body_size_problem(float(height_m), float(weight_kg))) is not None:
        raise ValueError(f"{problem[0]} {problem[1]}")
    return 0.20247 * height_m**0.725 * weight_kg**0.425


def resin_lsf_reduction(lsf: float) -> float:
    """Resin-sphere activity reduction factor for a lung shunt fraction (1, 0.8, 0.6; 0.6 above 20 %)."""
    lsf = _check_lsf(lsf)
    return next((factor for upper, factor in _RESIN_LSF_REDUCTION if lsf <= upper), _RESIN_LSF_REDUCTION[-1][1])


def bsa_method(height_m: float, weight_kg: float, tumour_volume_ml: float, normal_liver_volume_ml: float, *,
               lung_shunt_fraction: float = 0.0, lung_mass_kg: float = LUNG_MASS_KG,
               liver_density_g_ml: float = LIVER_DENSITY_G_ML, apply_lsf_reduction: bool = True,
               constants: str | DoseConstants = "resin") -> Prescription:
    """BSA-method activity (GBq, resin spheres): (BSA - 0.2 + V_T / (V_T + V_N)) times the LSF reduction."""
    c = get_constants(constants)
    bsa = body_surface_area_m2(height_m, weight_kg)
    v_t = float(tumour_volume_ml)
    if not math.isfinite(v_t) or v_t < 0:
        raise ValueError(f"tumour volume must be non-negative, got {v_t}")
    v_n = _check_positive("normal-liver volume", normal_liver_volume_ml)
    density = _check_positive("liver density", liver_density_g_ml)
    lsf = _check_lsf(lung_shunt_fraction)
    involvement = v_t / (v_t + v_n)
    reduction = resin_lsf_reduction(lsf) if apply_lsf_reduction else 1.0
    activity = (bsa - 0.2 + involvement) * reduction
    if activity <= 0:
        raise ValueError(f"the BSA formula gives a non-positive activity ({activity:.3f} GBq)")
    mass = (v_t + v_n) * density * 1e-3
    liver_gbq = (1.0 - lsf) * activity
    comp = Compartment("liver", mass, None, 1.0, liver_gbq, c.gy_kg_per_gbq * liver_gbq / mass)
    details = {"bsa_m2": bsa, "tumour_involvement": involvement, "lsf_reduction_factor": reduction,
               "liver_density_g_ml": density}
    extra = []
    if reduction < 1.0:
        message = (f"BSA method only: its activity is reduced to {100 * reduction:g} % for a lung shunt of "
                   f"{100 * lsf:.1f} % (resin-sphere rule; the other methods' activities are not reduced)")
        extra.append(ResultWarning("bsa_activity_reduced", message, reduction, None))
    return _finish("bsa", activity, lsf, _check_positive("lung mass", lung_mass_kg), [comp], c, details, extra)

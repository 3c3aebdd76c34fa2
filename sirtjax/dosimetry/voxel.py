"""Voxel dosimetry of one study: activity image + VOI masks -> dose map, per-VOI statistics, report.

This is what ``sirtjax dose`` and the planning/verification workflows call. Everything is on the
activity grid: masks on another grid are resampled onto it (nearest neighbour; the report says
so), a CT for density scaling is resampled trilinearly and must cover every voxel with activity.

VOIs, in report order: ``liver`` (liver mask united with the lesions: the treated volume),
``normal_liver`` (liver without lesions, when lesions are given), ``lesion_<id>`` for each lesion
instance of the label map, ``lungs`` (when a lung mask is given). Voxels in both the liver and the
lungs count as liver (a warning gives their number).

Lung shunt (SPECT counts input): taken from ``lung_shunt_fraction`` when given, else from the counts
in the lung and liver masks (which underestimates it when the SPECT does not hold the whole lungs;
the planar-image LSF is the clinical standard), else 0 with a warning. The lung mean dose is the lung-dose formula
``F * LSF * A / M_lung``; M_lung is the lung mask's volume times the CT density (or
``lung_density_g_ml`` without CT), or 1 kg without a lung mask. The ``lungs`` VOI of the dose map
itself only holds the spill-over from the liver in that case, because the map carries the liver
activity only.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from sirtjax.dosimetry.activity import activity_from_bq_per_ml, activity_from_counts, choose_lung_shunt, lung_shunt_fraction
from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML, LUNG_MASS_KG, DoseConstants, get_constants
from sirtjax.dosimetry.dose import dose_ldm, dose_vsv, hu_to_density_g_ml, voxel_volume_ml
from sirtjax.dosimetry.kernels import voxel_kernel
from sirtjax.dosimetry.limits import check_lung_dose, check_lung_shunt
from sirtjax.dosimetry.masks import DoseInputError, blame, image_on_grid, liver_compartments
from sirtjax.plausibility import ResultWarning, check_dose_maximum, check_resampled
from sirtjax.preprocess import labels_on_grid
from sirtjax.programs import ProgramCache
from sirtjax.dosimetry.prescription import lung_dose_gy
from sirtjax.dosimetry.statistics import (DEFAULT_DOSE_LEVELS_PCT, DEFAULT_VOLUME_LEVELS_GY, VoiStatistics,
                                          voi_statistics)
from sirtjax.volume import Volume, make_volume

LUNG_DENSITY_G_ML = 0.3  # inflated lung parenchyma (ICRP reference lung about 0.26-0.30 g/ml)
INPUT_KINDS = ("counts", "bq-per-ml")
MODELS = ("vsv", "ldm")
D_X_DEFINITION = "D_x: minimum dose to the hottest x % of the VOI (k-th largest voxel dose, k = max(1, ceil(x n / 100)))"
V_X_DEFINITION = "V_x: percentage of the VOI's voxels receiving at least x Gy"


@dataclasses.dataclass(frozen=True)
class LungDose:
    """The lungs' mean dose (Gy) by the lung-dose formula and the lung mass (kg) it divides by, with its source."""

    mass_kg: float
    mass_source: str
    dose_gy: float
    formula: str = "F * LSF * A / M_lung"


@dataclasses.dataclass(frozen=True)
class DoseResult:
    """Dose map (Gy, float32, activity grid), VOI names, their statistics, the dose model and constants, the activity,
    the lung dose, warnings, and the JSON-ready report (written at the output edge, not read back)."""

    dose: Volume
    voi_names: tuple[str, ...]
    statistics: VoiStatistics
    model: str  # vsv or ldm
    constants: DoseConstants
    administered_gbq: float | None  # the activity given with SPECT counts; None for a PET in Bq/ml
    lung_shunt_fraction: float | None  # the LSF applied to SPECT counts; None for a PET
    total_gbq: float  # activity on the grid after the lung shunt (counts) or in the PET
    liver_gbq: float  # of which in the liver region (liver and lesions)
    lung: LungDose | None  # with SPECT counts; None for a PET
    report: dict
    warnings: tuple[ResultWarning, ...] = ()

    def records(self) -> list[dict]:
        """The per-VOI statistics as records (name, volume_ml, mean_gy, D_x, V_x; NaN as None)."""
        return self.statistics.to_records(list(self.voi_names))

    def mean_gy(self, voi: str) -> float | None:
        """Mean dose of the named VOI (Gy); None when it has no voxels or no such VOI."""
        if voi not in self.voi_names:
            return None
        value = float(self.statistics.mean_gy[self.voi_names.index(voi)])
        return value if np.isfinite(value) else None


def _grid_dict(vol: Volume) -> dict:
    return {"shape_zyx": list(vol.shape), "spacing_mm": np.asarray(vol.spacing_mm).tolist(),
            "origin_mm": np.asarray(vol.origin_mm).tolist(), "direction": np.asarray(vol.direction).tolist()}


def voxel_dosimetry(
    activity: Volume,
    liver: Volume,
    *,
    lesions: Volume | None = None,
    lungs: Volume | None = None,
    ct: Volume | None = None,
    input_kind: str = "counts",
    activity_gbq: float | None = None,
    lung_shunt_fraction: float | None = None,
    model: str = "vsv",
    constants: str = "icrp107",
    liver_density_g_ml: float = LIVER_DENSITY_G_ML,
    lung_density_g_ml: float = LUNG_DENSITY_G_ML,
    dose_levels_pct=DEFAULT_DOSE_LEVELS_PCT,
    volume_levels_gy=DEFAULT_VOLUME_LEVELS_GY,
    num_bins: int = 500,
    programs: ProgramCache | None = None,
) -> DoseResult:
    """Dose (Gy) and VOI statistics from SPECT counts (needs activity_gbq) or PET Bq/ml.

    Bad input raises :class:`DoseInputError` (a ValueError) naming the input at fault. ``programs``: where the
    convolution's and the statistics' compiled programs are kept (:class:`~sirtjax.programs.ProgramCache`).
    """
    _check_parameters(input_kind, model, activity_gbq, lung_shunt_fraction, liver_density_g_ml, lung_density_g_ml)
    with blame("constants"):
        c = get_constants(constants)
    warnings: list[ResultWarning] = []
    liver_region, lesion_arr, lung_arr, masks_note = _vois_on_grid(activity, liver, lesions, lungs, warnings)

    image = np.asarray(activity.array, np.float32)
    inputs: dict = {"kind": input_kind}
    if input_kind == "counts":
        with blame("activity"):
            lsf, inputs["lsf_source"] = _lung_shunt(image, liver_region, lung_arr, lung_shunt_fraction, warnings)
            act = activity_from_counts(image, liver_region, activity_gbq=activity_gbq, lung_shunt_fraction=lsf)
        inputs.update(activity_gbq=float(activity_gbq), lung_shunt_fraction=lsf)
    else:
        act, removed = activity_from_bq_per_ml(image, activity.spacing_mm)
        inputs["negative_activity_removed_gbq"] = removed
        if removed > 0:
            warnings.append(ResultWarning("negative_activity_removed",
                                             f"negative PET voxels held {removed:.4g} GBq; set to 0", removed))

    density = None
    if ct is not None:
        with blame("ct"):
            density = hu_to_density_g_ml(image_on_grid(ct, activity, "CT", np.asarray(act) > 0))
    kernel = voxel_kernel(activity.spacing_mm) if model == "vsv" else None
    if model == "vsv":
        if kernel.extrapolated:
            warnings.append(ResultWarning("kernel_extrapolated", "voxel size outside the tabulated 2.21-9.28 mm: "
                                             "the S-value kernel is extrapolated"))
        dose = dose_vsv(act, activity.spacing_mm, constants=c, density_g_ml=density, kernel=kernel, programs=programs)
    else:
        dose = dose_ldm(act, activity.spacing_mm, constants=c,
                        density_g_ml=liver_density_g_ml if density is None else density)
    dose = np.asarray(dose, np.float32)
    warnings += check_dose_maximum(float(dose.max()))

    names, stats = _statistics(dose, liver_region, lesion_arr, lung_arr, activity.spacing_mm,
                               dose_levels_pct, volume_levels_gy, num_bins, programs)
    lung = None
    if input_kind == "counts":
        lung = _lung_dose(lung_arr, density, activity.spacing_mm, lung_density_g_ml, float(activity_gbq), lsf, c)
        warnings += check_lung_shunt(lsf) + check_lung_dose(lung.dose_gy)
    act_np = np.asarray(act, np.float64)
    total_gbq, liver_gbq = float(act_np.sum()), float(act_np[liver_region].sum())
    report = {
        "model": model,
        "kernel": None if kernel is None else kernel.describe(),
        "constants": c.to_dict(),
        "input": inputs,
        "grid": _grid_dict(activity),
        "density": {"source": "ct" if ct is not None else "constant",
                    "liver_density_g_ml": None if (ct is not None or model == "vsv") else liver_density_g_ml,
                    "note": _density_note(model, ct is not None, kernel)},
        "activity": {"total_gbq": total_gbq, "liver_gbq": liver_gbq},
        "lung": None if lung is None else dataclasses.asdict(lung),
        "masks": masks_note,
        "vois": stats.to_records(list(names)),
        "definitions": {"D_x": D_X_DEFINITION, "V_x": V_X_DEFINITION},
        "warnings": [w.to_dict() for w in warnings],
    }
    dose_vol = make_volume(dose, activity.spacing_mm, activity.origin_mm, activity.direction)
    counts = input_kind == "counts"
    return DoseResult(dose_vol, tuple(names), stats, model, c, float(activity_gbq) if counts else None,
                      lsf if counts else None, total_gbq, liver_gbq, lung, report, tuple(warnings))


def _vois_on_grid(activity, liver, lesions, lungs, warnings):
    """Liver region (liver | lesions), lesion labels, lung mask (outside the liver) on the grid; notes."""
    masks_note = {}
    with blame("liver"):
        liver_arr, masks_note["liver"] = labels_on_grid(liver, activity, "liver")
        if not np.any(liver_arr):
            raise ValueError("the liver mask is empty on the activity grid")
    lesion_arr = np.zeros(activity.shape, np.int32)
    if lesions is not None:
        with blame("lesions"):
            lesion_arr, masks_note["lesions"] = labels_on_grid(lesions, activity, "lesions")
    outside = int(np.count_nonzero((lesion_arr > 0) & (liver_arr == 0)))
    if outside:
        warnings.append(ResultWarning("lesions_outside_liver",
                                         f"{outside} lesion voxels lie outside the liver mask; they count as liver", outside))
    liver_region = (liver_arr > 0) | (lesion_arr > 0)
    lung_arr = None
    if lungs is not None:
        with blame("lungs"):
            lung_arr, masks_note["lungs"] = labels_on_grid(lungs, activity, "lungs")
        lung_arr = lung_arr > 0
        both = int(np.count_nonzero(lung_arr & liver_region))
        if both:
            warnings.append(ResultWarning("lungs_overlap_liver",
                                             f"{both} voxels are in both the lung and the liver masks; they count as liver", both))
            lung_arr &= ~liver_region
    for name, note in masks_note.items():
        warnings += check_resampled(name, note)
    return liver_region, lesion_arr, lung_arr, masks_note


def _check_parameters(input_kind, model, activity_gbq, lsf, liver_density, lung_density) -> None:
    if input_kind not in INPUT_KINDS:
        raise DoseInputError("input_kind", f"must be one of {', '.join(INPUT_KINDS)}, got '{input_kind}'")
    if model not in MODELS:
        raise DoseInputError("model", f"must be one of {', '.join(MODELS)}, got '{model}'")
    for name, value in (("liver_density_g_ml", liver_density), ("lung_density_g_ml", lung_density)):
        if not np.isfinite(value) or value <= 0:
            raise DoseInputError(name, f"must be a positive density in g/ml, got {value}")
    if input_kind == "bq-per-ml":
        for name, value in (("activity_gbq", activity_gbq), ("lung_shunt_fraction", lsf)):
            if value is not None:
                raise DoseInputError(name, "a PET image in Bq/ml is absolute activity; do not give it")
        return
    if activity_gbq is None:
        raise DoseInputError("activity_gbq", "SPECT counts need the administered activity")
    if not np.isfinite(activity_gbq) or activity_gbq <= 0:
        raise DoseInputError("activity_gbq", f"must be positive, got {activity_gbq}")
    if lsf is not None and not 0.0 <= lsf < 1.0:
        raise DoseInputError("lung_shunt_fraction", f"must be in [0, 1), got {lsf}")


def _density_note(model: str, with_ct: bool, kernel) -> str:
    if with_ct:
        if model == "vsv":
            return "density from CT (HU -> g/ml, piecewise linear); VSV dose scaled by rho_kernel / rho"
        return "LDM mass from CT density (HU -> g/ml, piecewise linear)"
    if model == "vsv":
        return f"soft tissue of the kernel (closure density {kernel.closure_density_g_ml():.3f} g/ml)"
    return "constant liver density"


def _lung_shunt(counts, liver_region, lung_arr, given, warnings) -> tuple[float, str]:
    measured = None
    if given is None and lung_arr is not None and np.any(lung_arr):
        counts64 = np.asarray(counts, np.float64)
        measured = lung_shunt_fraction(float(counts64[lung_arr].sum()), float(counts64[liver_region].sum()))
    shunt = choose_lung_shunt(given, "given", measured,
                              spect_source="counts in the lung and liver masks (valid if the image holds the whole lungs)")
    warnings.extend(shunt.warnings)
    return shunt.fraction, shunt.source


def _lung_dose(lung_arr, density, spacing_mm, lung_density_g_ml, activity_gbq, lsf, c) -> LungDose:
    if lung_arr is None or not np.any(lung_arr):
        mass, source = LUNG_MASS_KG, "conventional 1 kg"
    elif density is not None:
        mass = float(np.asarray(density, np.float64)[lung_arr].sum()) * voxel_volume_ml(spacing_mm) * 1e-3
        source = "lung mask volume x CT density"
    else:
        mass = float(np.count_nonzero(lung_arr)) * voxel_volume_ml(spacing_mm) * lung_density_g_ml * 1e-3
        source = f"lung mask volume x {lung_density_g_ml:g} g/ml"
    return LungDose(mass, source, lung_dose_gy(activity_gbq, lsf, mass, c))


def _statistics(dose, liver_region, lesion_arr, lung_arr, spacing_mm, dose_levels, volume_levels, num_bins, programs):
    """VOI statistics in one call: disjoint compartments, plus the whole liver appended by concatenation."""
    if np.any(lesion_arr > 0):
        compartments, names = liver_compartments(liver_region, lesion_arr)
    else:  # without lesions the normal liver is the liver, appended below
        compartments, names = np.zeros(dose.shape, np.int32), []
    if lung_arr is not None:
        compartments[lung_arr] = len(names) + 1
        names.append("lungs")
    liver_label = len(names) + 1
    flat_dose = np.concatenate([dose.ravel(), dose[liver_region]])
    flat_labels = np.concatenate([compartments.ravel(), np.full(int(liver_region.sum()), liver_label, np.int32)])
    stats = voi_statistics(jax.device_put(flat_dose), jax.device_put(flat_labels), voxel_volume_ml=voxel_volume_ml(spacing_mm),
                           num_labels=liver_label, dose_levels_pct=dose_levels, volume_levels_gy=volume_levels,
                           num_bins=num_bins, programs=programs)
    order = [liver_label - 1] + list(range(liver_label - 1))
    reordered = VoiStatistics(**{f.name: _take(getattr(stats, f.name), order, f.name) for f in dataclasses.fields(stats)})
    return ["liver"] + names, reordered


def _take(value, order, name):
    if name in ("dose_levels_pct", "volume_levels_gy", "dvh_edges_gy"):
        return value
    return np.asarray(value)[order]

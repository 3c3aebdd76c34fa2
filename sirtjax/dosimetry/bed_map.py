"""A dose map's radiobiology per compartment: the BED map, BED DVHs and per-VOI BED, EUD, NTCP and TCP.

The compartments are disjoint (:func:`sirtjax.dosimetry.masks.liver_compartments`): ``normal_liver``
(the liver mask less the lesions) and one ``lesion_<id>`` per lesion instance. Each takes its tissue model from the parameter file
(:func:`load_tissue_models`): ``normal_liver`` and ``lesion`` (every lesion). A compartment
without a model, or without a voxel on the dose grid, is left out and listed; the BED map is 0 outside the modelled
compartments. Formulas and their sources: :mod:`sirtjax.dosimetry.radiobiology`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sirtjax.dosimetry.constants import Y90_HALF_LIFE_H
from sirtjax.dosimetry.dose import voxel_volume_ml
from sirtjax.dosimetry.masks import liver_compartments
from sirtjax.dosimetry.radiobiology import TissueModel, VoiRadiobiology, bed_gy, voi_radiobiology
from sirtjax.dosimetry.statistics import VoiStatistics, voi_statistics
from sirtjax.errors import InputError
from sirtjax.volume import Volume

TISSUE_KEYS = ("normal_liver", "lesion")
BED_FORMULA = "D (1 + D lambda / ((mu + lambda) alpha/beta)), permanent implant (Dale 1985)"


def load_tissue_models(path: Path) -> dict[str, TissueModel]:
    """The tissue models of a JSON parameter file ({"normal_liver": {...}, "lesion": {...}}); InputError naming it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the radiobiology parameters: {exc}") from None
    if not isinstance(raw, dict) or not raw or set(raw) - set(TISSUE_KEYS):
        raise InputError(path, f"expected an object with {' and/or '.join(TISSUE_KEYS)}, got keys {sorted(raw) if isinstance(raw, dict) else raw!r}")
    try:
        return {key: TissueModel.from_dict(value, key) for key, value in raw.items()}
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


@dataclasses.dataclass(frozen=True)
class BedResult:
    """BED map (Gy, 0 outside the modelled compartments), per-VOI summaries, BED DVHs (``bed_statistics``)."""

    bed: Volume
    vois: tuple[VoiRadiobiology, ...]
    bed_statistics: VoiStatistics
    unmodelled: tuple[str, ...]  # compartments without a tissue model
    empty: tuple[str, ...]  # compartments without a voxel on the dose grid


def dose_radiobiology(dose_gy: Volume, labels: np.ndarray, names: tuple[str, ...],
                      models: dict[str, TissueModel], num_bins: int = 500) -> BedResult:
    """The BED map and every modelled compartment's summary of ``dose_gy`` (labels on its grid, 1..K = names)."""
    dose = np.asarray(dose_gy.array, np.float32)
    if labels.shape != dose.shape:
        raise ValueError(f"labels {labels.shape} and dose {dose.shape} differ in shape")
    bed = np.zeros_like(dose)
    modelled = np.zeros(labels.shape, np.int32)
    vois, kept, unmodelled, empty = [], [], [], []
    ml = voxel_volume_ml(dose_gy.spacing_mm)
    for k, name in enumerate(names, start=1):
        tissue = models.get("lesion" if name.startswith("lesion_") else name)
        inside = labels == k
        if tissue is None or not inside.any():
            (unmodelled if tissue is None else empty).append(name)
            continue
        bed[inside] = np.asarray(bed_gy(dose[inside], alpha_beta_gy=tissue.alpha_beta_gy,
                                        repair_half_time_h=tissue.repair_half_time_h))
        vois.append(voi_radiobiology(name, dose[inside], tissue, voxel_volume_ml=ml))
        kept.append(name)
        modelled[inside] = len(kept)
    if not vois:
        raise ValueError(f"no compartment has both a tissue model and a voxel on the dose grid (no model: "
                         f"{', '.join(unmodelled) or 'none'}; no voxel: {', '.join(empty) or 'none'})")
    stats = voi_statistics(bed, modelled, voxel_volume_ml=ml, num_labels=len(kept), num_bins=num_bins)
    return BedResult(dose_gy.with_array(bed), tuple(vois), stats, tuple(unmodelled), tuple(empty))


def radiobiology_report(result: BedResult, models: dict[str, TissueModel]) -> dict:
    """The JSON-ready part of a report: models with their sources, per-VOI summaries, BED DVH statistics, skipped VOIs."""
    return {"half_life_h": Y90_HALF_LIFE_H, "bed_formula": BED_FORMULA, "models": models, "vois": list(result.vois),
            "unmodelled": list(result.unmodelled), "empty": list(result.empty),
            "bed_dvh": result.bed_statistics.to_records([v.name for v in result.vois])}


def workflow_radiobiology(dose_gy: Volume, liver: Volume, lesions: Volume | None,
                          models: dict[str, TissueModel]) -> BedResult:
    """:func:`dose_radiobiology` of a workflow's dose with its liver and lesion instances on the dose grid."""
    labels, names = liver_compartments(np.asarray(liver.array), None if lesions is None else np.asarray(lesions.array))
    return dose_radiobiology(dose_gy, labels, tuple(names), models)

"""What ``sirtjax dose`` does: a :class:`DoseRequest` (image files and options) checked, read, computed and written.

The dose is :func:`sirtjax.dosimetry.voxel.voxel_dosimetry`'s, on the activity grid: masks on another grid are
resampled (nearest neighbour) onto it and the report says so; SPECT counts inside the liver are scaled to
(1 - LSF) x the administered activity. Two additions, when asked for:

- the lesions' recovery correction (``recovery_csv``, or ``fwhm_mm`` for the analytic curve; ``match_fwhm_mm``
  blurs the activity image first): every lesion's mean dose divided by the recovery coefficient at its volume
  (:mod:`sirtjax.dosimetry.recovery`, docs/pet-quantification.md);
- the uncertainty ensemble (``ensemble.members``, SPECT counts without a CT): that many plausible calibrations,
  residuals, lung shunts and VOI outlines drawn from the stated sds (:mod:`sirtjax.dosimetry.uncertainty`,
  docs/uncertainty.md). Every sd is an assumption the user states, and the report records it.

Bad input raises :class:`~sirtjax.errors.InputError` naming the file or the command line's option at fault, before
anything is written; the output folder is published whole (:mod:`sirtjax.outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from sirtjax import keys
from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML
from sirtjax.dosimetry.masks import DoseInputError
from sirtjax.dosimetry.outputs import write_dose_outputs
from sirtjax.dosimetry.recovery import (RecoveryCorrection, RecoveryCurve, checked_recovery_curve, match_resolution,
                                        recovery_correction)
from sirtjax.dosimetry.statistics import DEFAULT_DOSE_LEVELS_PCT, DEFAULT_VOLUME_LEVELS_GY
from sirtjax.dosimetry.uncertainty import EnsembleOptions, UncertaintyModel, ensemble, summarise
from sirtjax.dosimetry.voxel import DoseResult, voxel_dosimetry
from sirtjax.errors import InputError
from sirtjax.io import read_ct, read_volume
from sirtjax.outputs import check_output, output_dir
from sirtjax.plausibility import ResultWarning
from sirtjax.programs import ProgramCache
from sirtjax.volume import Volume

_OPTIONS = {"activity_gbq": "--activity-gbq", "lung_shunt_fraction": "--lung-shunt", "constants": "--constants",
           "liver_density_g_ml": "--liver-density"}  # voxel_dosimetry's parameters an error may name


@dataclasses.dataclass(frozen=True)
class DoseRequest:
    """The files and options of one dose computation (``sirtjax dose``'s; errors name them as its options do)."""

    activity: Path  # SPECT counts (input_kind "counts") or 90Y PET in Bq/ml ("bq-per-ml")
    liver: Path  # liver mask (non-zero = liver), any grid
    out: Path  # the output folder: dose.nii.gz, dvh.csv, dvh.png, report.json [, uncertainty.png]
    lesions: Path | None = None  # lesion label map (0, 1..n instances)
    lungs: Path | None = None  # lung mask: the LSF from counts (without lung_shunt_fraction) and the lung mass
    ct: Path | None = None  # CT (HU) for density scaling
    input_kind: str = "counts"
    activity_gbq: float | None = None  # administered; required with counts
    lung_shunt_fraction: float | None = None
    model: str = "vsv"  # vsv or ldm
    constants: str = "icrp107"
    liver_density_g_ml: float = LIVER_DENSITY_G_ML  # the LDM's without a CT
    dose_levels_pct: tuple[float, ...] = DEFAULT_DOSE_LEVELS_PCT  # D_x levels, % of the VOI volume
    volume_levels_gy: tuple[float, ...] = DEFAULT_VOLUME_LEVELS_GY  # V_x levels
    fwhm_mm: float | None = None  # resolution of the activity image
    match_fwhm_mm: float | None = None  # blur the activity image from fwhm_mm to this first
    recovery_csv: Path | None = None  # measured recovery curve (volume_ml, recovery_coefficient)
    ensemble: EnsembleOptions = EnsembleOptions()  # the uncertainty ensemble's options
    seed: int = 0  # of the ensemble's draws
    overwrite: bool = False

    def inputs(self) -> list[Path]:
        """The files the request reads (the output must keep clear of them)."""
        paths = (self.activity, self.liver, self.lesions, self.lungs, self.ct, self.recovery_csv)
        return [p for p in paths if p is not None]


@dataclasses.dataclass(frozen=True)
class DoseReport:
    """A request's dose with its lesions' recovery correction and its ensemble's summary per VOI (None: not asked
    for); :meth:`to_json` is its report.json."""

    request: DoseRequest
    dose: DoseResult
    recovery: RecoveryCorrection | None = None
    stated: UncertaintyModel | None = None
    uncertainty: list[dict] | None = None  # sirtjax.dosimetry.uncertainty.summarise's records, one per VOI

    @property
    def warnings(self) -> tuple[ResultWarning, ...]:
        """The dose's warnings, then the recovery correction's."""
        return self.dose.warnings + (self.recovery.warnings if self.recovery is not None else ())

    def to_json(self) -> dict:
        """The JSON-ready report: the dose's, with the resolution matching, recovery and uncertainty entries."""
        r = self.request
        report = {**self.dose.report, "warnings": [w.to_dict() for w in self.warnings]}
        if r.match_fwhm_mm is not None:
            report["resolution"] = {"fwhm_mm": r.fwhm_mm, "matched_to_fwhm_mm": r.match_fwhm_mm}
        if self.recovery is not None:
            report["recovery"] = self.recovery.to_dict()
        if self.uncertainty is not None:
            report["uncertainty"] = {"members": r.ensemble.members, "seed": r.seed, "stated": self.stated,
                                     "vois": self.uncertainty}
        return report


def dose_from_files(request: DoseRequest, progress: Callable[[str], object] = lambda stage: None,
                    programs: ProgramCache | None = None) -> DoseReport:
    """The dose of a request, written into its output folder (module docstring); ``progress`` is told each stage;
    ``programs`` keeps the dosimetry's and the uncertainty ensemble's compiled programs for later calls and processes
    (None: compiled in this process)."""
    r = request
    check_output(r.out, overwrite=r.overwrite, inputs=r.inputs())
    curve, stated = _checked(r)
    progress("reading images")
    images = _read_images(r)
    progress(f"computing {r.model.upper()} dose")
    dose = _voxel_dose(images, r, programs)
    summary = None
    if stated is not None:
        progress(f"uncertainty ensemble of {r.ensemble.members}")
        summary = _ensemble_summary(images, dose, stated, r, programs)
    recovery = None if curve is None else recovery_correction(dose.records(), curve)
    result = DoseReport(r, dose, recovery, stated, summary)
    progress("writing outputs")
    with output_dir(r.out, overwrite=r.overwrite, inputs=r.inputs()) as tmp:
        write_dose_outputs(dose, tmp, report=result.to_json())
        if result.uncertainty is not None:
            from sirtjax.report.uncertainty import tornado_png

            (tmp / "uncertainty.png").write_bytes(tornado_png(result.uncertainty))
    return result


def _checked(r: DoseRequest) -> tuple[RecoveryCurve | None, UncertaintyModel | None]:
    """The recovery curve (None: no correction) and the stated uncertainty model (None: no ensemble) of a request,
    after checking its options; InputError naming the option."""
    curve = checked_recovery_curve({"--fwhm-mm": r.fwhm_mm}, r.match_fwhm_mm, r.recovery_csv)
    stated = r.ensemble.stated()
    if stated is not None and (r.input_kind != "counts" or r.ct is not None):
        raise InputError("--uncertainty", "is for SPECT counts without --ct (the PET's and the density map's "
                                          "uncertainties are not modelled)")
    if r.seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {r.seed}")
    if any(not 0.0 <= x <= 100.0 for x in r.dose_levels_pct):
        raise InputError("--dx", "D_x levels are percentages in [0, 100], got "
                                 f"{','.join(f'{x:g}' for x in r.dose_levels_pct)}")
    return curve, stated


def _ensemble_summary(images: dict[str, Volume], dose: DoseResult, stated: UncertaintyModel,
                      r: DoseRequest, programs: ProgramCache | None) -> list[dict]:
    """The summary of the request's ensemble around its dose; the masks' outlines move on their own grids."""
    e = ensemble(images["activity"], images["liver"], images.get("lesions"), activity_gbq=dose.administered_gbq,
                 lung_shunt_fraction=dose.lung_shunt_fraction, model=stated, key=keys.key(r.seed),
                 n=r.ensemble.members, dose_model=r.model, constants=r.constants,
                 liver_density_g_ml=r.liver_density_g_ml, programs=programs)
    return summarise(e)


def _read_images(r: DoseRequest) -> dict[str, Volume]:
    """The request's images by voxel_dosimetry's names, the activity blurred to match_fwhm_mm when asked."""
    images = {name: read_volume(path) for name, path in
              (("activity", r.activity), ("liver", r.liver), ("lesions", r.lesions), ("lungs", r.lungs))
              if path is not None}
    if r.ct is not None:
        images["ct"] = read_ct(r.ct)
    if r.match_fwhm_mm is not None:
        images["activity"] = match_resolution(images["activity"], r.fwhm_mm, r.match_fwhm_mm)
    return images


def _voxel_dose(images: dict[str, Volume], r: DoseRequest, programs: ProgramCache | None) -> DoseResult:
    """voxel_dosimetry of the request's images (``programs``: its compiled programs' cache); its DoseInputError as an
    InputError naming the file or option."""
    try:
        return voxel_dosimetry(
            images["activity"], images["liver"], lesions=images.get("lesions"), lungs=images.get("lungs"),
            ct=images.get("ct"), input_kind=r.input_kind, activity_gbq=r.activity_gbq,
            lung_shunt_fraction=r.lung_shunt_fraction, model=r.model, constants=r.constants,
            liver_density_g_ml=r.liver_density_g_ml, dose_levels_pct=r.dose_levels_pct,
            volume_levels_gy=r.volume_levels_gy, programs=programs,
        )
    except DoseInputError as exc:
        files = {"activity": r.activity, "liver": r.liver, "lesions": r.lesions, "lungs": r.lungs, "ct": r.ct}
        raise InputError({**files, **_OPTIONS}.get(exc.input_name, exc.input_name), str(exc)) from None

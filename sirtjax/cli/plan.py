"""``sirtjax plan STUDY -o DIR``: the planning workflow (MAA SPECT/CT + diagnostic images) on a study manifest
or on a PACS export (imported as ``sirtjax study`` does, into ``DIR/study``). Option details: docs/demo.md."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import ConstantSet, Method, Model, Overwrite, app, program_cache, progress_bar
from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, LUNG_SHUNT_SD, REGISTRATIONS, RESIDUAL, RESIDUAL_SD,
                                      BoundarySd, CalibrationSd, LungShuntSd, Members, Registrations, Residual, ResidualSd)
from sirtjax.cli.study import Series


class RtDoseBits(str, Enum):
    """Bits Allocated of the RT Dose."""

    b32 = "32"
    b16 = "16"


def progress_bars():
    """A rich Progress with a stage line and one bar per registration level; returns (bar, say, progress)."""
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = progress_bar(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                       TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    stage = bar.add_task("starting", total=None)
    levels: dict[str, int] = {}

    def say(text: str) -> None:
        bar.update(stage, description=text)

    def progress(label: str, it: int, total: int) -> None:
        if label not in levels:
            levels[label] = bar.add_task(f"  registration {label}", total=total)
        bar.update(levels[label], completed=it)

    return bar, say, progress


Study = Annotated[Path, typer.Argument(help="Study folder or its study.json, or a PACS export (DICOM tree).")]
Out = Annotated[Path, typer.Option("-o", "--out", help="Output folder (refused if it exists, unless --overwrite).")]
LungShunt = Annotated[float | None, typer.Option("--lung-shunt", help="Planar lung shunt fraction in [0, 1).")]
_MODEL_HELP = "Dose model: vsv (default) or ldm."
_CONSTANTS_HELP = "90Y constant set (default: icrp107)."
_PLANS = " With --plan: the plan's."
DoseModel = Annotated[Model | None, typer.Option("--model", help=_MODEL_HELP + _PLANS, show_default=False)]
Constants = Annotated[ConstantSet | None, typer.Option("--constants", help=_CONSTANTS_HELP + _PLANS, show_default=False)]
PLAN_ONLY = {"model": Annotated[Model | None, typer.Option("--model", help=_MODEL_HELP, show_default=False)],
             "constants": Annotated[ConstantSet | None, typer.Option("--constants", help=_CONSTANTS_HELP, show_default=False)]}
"""The annotations of ``plan``, whose help has no --plan to refer to."""
Prescribe = Annotated[Method, typer.Option("--method", help="Prescription of the activity when the study gives none.")]
Quick = Annotated[bool, typer.Option("--quick", help="Quick, coarser registration.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the registrations' MI sampling.")]
LiverModel = Annotated[str, typer.Option("--liver-model", help="Liver model for images without a liver mask.")]
LesionModel = Annotated[str, typer.Option("--lesion-model", help="Lesion model for studies without lesions.")]
RegsegModel = Annotated[str, typer.Option("--regseg-model", help="Registration-segmentation network ('none': off).")]
DoseBits = Annotated[RtDoseBits, typer.Option("--rtdose-bits", help="Bits of the RT Dose (16 for 16-bit viewers).")]
Radiobiology = Annotated[Path | None, typer.Option("--radiobiology", help="Tissue models (JSON): BED, EUD, NTCP, TCP.")]
PlanDir = Annotated[Path | None, typer.Option("--plan", help="An earlier `sirtjax plan` folder to compare with.")]
PetFwhm = Annotated[float | None, typer.Option("--pet-fwhm-mm", help="Resolution (FWHM, mm) of the 90Y PET.")]
SpectFwhm = Annotated[float | None, typer.Option("--spect-fwhm-mm", help="Resolution (FWHM, mm) of the MAA SPECT.")]
MatchFwhm = Annotated[float | None, typer.Option("--match-fwhm-mm", help="Blur PET and SPECT to this FWHM (mm).")]
RecoveryCsv = Annotated[Path | None, typer.Option("--recovery-csv", help="Measured recovery curve of the PET (CSV).")]
AcceptImplausible = Annotated[bool, typer.Option("--accept-implausible", help="Go on with a liver outside 0.6-4.5 L.")]
VERIFY_ONLY = ("plan_dir", "pet_fwhm_mm", "spect_fwhm_mm", "match_fwhm_mm", "recovery_csv")


def _run(
    study: Study,
    out: Out,
    plan_dir: PlanDir = None,
    lung_shunt: LungShunt = None,
    model: DoseModel = None,
    constants: Constants = None,
    method: Prescribe = Method.partition,
    quick: Quick = False,
    seed: Seed = 0,
    liver_model: LiverModel = "liver",
    lesion_model: LesionModel = "lesions",
    regseg_model: RegsegModel = "none",
    overwrite: Overwrite = False,
    series: Series = [],  # noqa: B006
    rtdose_bits: DoseBits = RtDoseBits.b32,
    uncertainty: Members = 0,
    calibration_sd: CalibrationSd = CALIBRATION_SD,
    residual: Residual = RESIDUAL,
    residual_sd: ResidualSd = RESIDUAL_SD,
    lung_shunt_sd: LungShuntSd = LUNG_SHUNT_SD,
    boundary_sd_mm: BoundarySd = BOUNDARY_SD_MM,
    registration_samples: Registrations = REGISTRATIONS,
    radiobiology: Radiobiology = None,
    pet_fwhm_mm: PetFwhm = None,
    spect_fwhm_mm: SpectFwhm = None,
    match_fwhm_mm: MatchFwhm = None,
    recovery_csv: RecoveryCsv = None,
    accept_implausible: AcceptImplausible = False,
    verify_too: bool = False,
):
    """The RunResult of ``plan`` (or ``verify``: verify_too) with the command's options."""
    from sirtjax.cli.study import import_dicom
    from sirtjax.dosimetry.uncertainty import EnsembleOptions
    from sirtjax.pipelines.request import WorkflowRequest, run_workflow

    request = WorkflowRequest(
        study, out, verify_too=verify_too, plan_dir=plan_dir, lung_shunt_fraction=lung_shunt,
        dose_model=None if model is None else model.value, constants=None if constants is None else constants.value, prescription_method=method.value,
        quick=quick, seed=seed, liver_model=liver_model, lesion_model=lesion_model, regseg_model=regseg_model,
        overwrite=overwrite, series=tuple(series), rtdose_bits=int(rtdose_bits.value),
        ensemble=EnsembleOptions(uncertainty, calibration_sd, residual, residual_sd, lung_shunt_sd, boundary_sd_mm),
        registration_samples=registration_samples, radiobiology=radiobiology,
        pet_fwhm_mm=pet_fwhm_mm, spect_fwhm_mm=spect_fwhm_mm, match_fwhm_mm=match_fwhm_mm, recovery_csv=recovery_csv,
        accept_implausible=accept_implausible)
    return run_workflow(request, programs=program_cache(), display=progress_bars, import_export=import_dicom)


def workflow_command(verify_too: bool, summary: Callable[..., str]) -> Callable[..., None]:
    """The typer function of ``plan`` (verify_too False) or ``verify`` (with --plan); summary(RunResult) is printed."""

    def command(**options) -> None:
        typer.echo(summary(_run(**options, verify_too=verify_too)))

    sig = inspect.signature(_run, eval_str=True)  # typer reads these annotations as given
    dropped = ("verify_too",) if verify_too else ("verify_too", *VERIFY_ONLY)
    params = [q for q in sig.parameters.values() if q.name not in dropped]
    if not verify_too:  # --plan and the PET's quantification belong to verify only
        params = [q.replace(annotation=PLAN_ONLY.get(q.name, q.annotation)) for q in params]
    command.__signature__ = sig.replace(parameters=params, return_annotation=None)
    return command


def _summary(result) -> str:
    """The line ``plan`` prints: planned activity, its source, the warnings and where the report is."""
    p = result.plan
    return (f"planned {p.planned_activity_gbq:.3f} GBq ({p.planned_activity_source}); "
            f"{len(p.warnings)} warning(s); report: {result.report_html}")


plan = app.command("plan", help="""Plan a SIRT treatment: VOIs on the MAA SPECT, T/N, LSF, prescriptions, predicted dose, report.

Writes VOIs (CT and SPECT grids), dose.nii.gz (Gy), dvh.csv, registration fields, rtstruct/ (CT, RT-Struct, RT Dose),
report.json and report.html into OUT.""")(workflow_command(False, _summary))

"""``sirtjax plan STUDY -o DIR``: the planning workflow (MAA SPECT/CT + diagnostic images) on a study manifest
or on a PACS export (imported as ``sirtjax study`` does, into ``DIR/study``)."""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Method, Model, Overwrite, app, program_cache, progress_bar
from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, LUNG_SHUNT_SD, REGISTRATIONS, RESIDUAL, RESIDUAL_SD,
                                      BoundarySd, CalibrationSd, LungShuntSd, Members, Registrations, Residual, ResidualSd,
                                      stated_model)
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


def _plan_settings(plan_dir: Path, out: Path, lung_shunt: float | None, model: str | None,
                   constants: str | None) -> tuple[str, str]:
    """The dose model and constants of the plan in plan_dir; InputError when the options contradict it."""
    from sirtjax.errors import InputError
    from sirtjax.pipelines.read import read_plan_report

    if not plan_dir.is_dir():
        raise InputError(plan_dir, "--plan takes the output folder of `sirtjax plan`; no such folder")
    if out.resolve() == plan_dir.resolve():
        raise InputError(out, "the output folder must not be the --plan folder (the plan would be overwritten)")
    report = read_plan_report(plan_dir)
    if lung_shunt is not None:
        raise InputError("--lung-shunt", f"not used with --plan: the plan's LSF ({report['lung_shunt']['fraction']:g}) "
                                         "is part of the plan")
    planned = (report["dose"]["model"], report["dose"]["constants"]["name"])
    for option, given, used in (("--model", model, planned[0]), ("--constants", constants, planned[1])):
        if given is not None and given != used:
            raise InputError(option, f"the plan in {plan_dir} used '{used}'; the verification must use the same")
    return planned


def _check_regseg_model(name: str) -> None:
    """Refuse --regseg-model before any work when it names no model or one that is not a registration-segmentation network."""
    from sirtjax.errors import InputError
    from sirtjax.models.store import read_spec, spec_problem

    problem = spec_problem(read_spec(name), "liver", "ct", registration=True)
    if problem is not None:
        raise InputError("--regseg-model", f"model {name} {problem}")


def run_command(study_path: Path, out: Path, *, verify_too: bool, lung_shunt: float | None, model: str | None,
                constants: str | None, method: str, quick: bool, seed: int, liver_model: str, lesion_model: str = "lesions",
                regseg_model: str = "none", plan_dir: Path | None = None, overwrite: bool = False, series: list[str] = (), rtdose_bits: int = 32,
                uncertainty=None, radiobiology: Path | None = None, pet=None, accept_implausible: bool = False):
    """Shared body of ``plan`` and ``verify``: validate, run with progress bars, return the RunResult.

    model/constants None: the plan's with ``plan_dir``, else vsv and icrp107. ``uncertainty``: an
    UncertaintyRequest for the doses (None: none). ``lesion_model`` 'none': sessions without lesions stay without.
    ``regseg_model`` (not 'none'): session CTs without a liver mask get the liver of a diagnostic CT's given mask
    through this registration-segmentation network.
    ``radiobiology``: the tissue-model file of --radiobiology. ``pet``: the verification's PetQuantification (None:
    the PET as reconstructed). ``accept_implausible``: go on with a segmented liver outside 0.6-4.5 L. A study_path folder
    without study.json is a PACS export: it is imported (``series``: the ``--series`` choices) into a
    temporary study, which the output keeps as ``study/``.
    """
    from sirtjax.cli.study import import_dicom
    from sirtjax.dosimetry.bed_map import load_tissue_models
    from sirtjax.dosimetry import constant_sets
    from sirtjax.errors import InputError
    from sirtjax.pipelines.run import run_study
    from sirtjax.pipelines.segment import workflow_options
    from sirtjax.outputs import check_output
    from sirtjax.io.study import load_study

    if lung_shunt is not None and not 0.0 <= lung_shunt < 1.0:
        raise InputError("--lung-shunt", f"must be in [0, 1), got {lung_shunt}")
    if plan_dir is not None:
        model, constants = _plan_settings(plan_dir, out, lung_shunt, model, constants)
    model, constants = model or "vsv", constants or "icrp107"
    if constants not in constant_sets():
        raise InputError("--constants", f"unknown constant set '{constants}' (one of {', '.join(constant_sets())})")
    if seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed}")
    if regseg_model != "none":
        _check_regseg_model(regseg_model)
    dicom = study_path.is_dir() and not (study_path / "study.json").exists()
    if series and not dicom:
        raise InputError("--series", "chooses series of a PACS export; this study has its study.json")
    with contextlib.ExitStack() as stack:
        if dicom:
            check_output(out, overwrite=overwrite, inputs=[study_path])
            imported = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sirtjax-dicom-")))
            study_path = import_dicom(study_path, imported / "study", list(series))
        study = load_study(study_path)
        check_output(out, overwrite=overwrite, inputs=[*study.input_paths(), *([plan_dir] if plan_dir else [])])
        options = workflow_options(quick=quick, liver_model=liver_model, lesion_model=lesion_model, regseg_model=regseg_model,
                                   programs=program_cache(), dose_model=model, constants=constants, prescription_method=method,
                                   rtdose_bits=rtdose_bits, uncertainty=uncertainty, pet=pet, accept_implausible_liver=accept_implausible,
                                   radiobiology=None if radiobiology is None else load_tissue_models(radiobiology))
        bar, say, progress = progress_bars()
        with bar:
            return run_study(study, out, overwrite=overwrite, verify_too=verify_too, options=options,
                             lung_shunt_fraction=lung_shunt, seed=seed, say=say, progress=progress, plan_folder=plan_dir,
                             copy_study=dicom)


LungShunt = Annotated[float | None, typer.Option("--lung-shunt", help="Lung shunt fraction in [0, 1) from planar "
                                                "scintigraphy (default: the manifest's lung_shunt_fraction, else "
                                                "from SPECT lung/liver counts, else 0).")]
_MODEL_HELP = "vsv (default): voxel S-value convolution; ldm: local deposition."
_CONSTANTS_HELP = "90Y constant set: icrp107 (default), thesis, resin, glass."
_PLANS = " With --plan: the plan's."
DoseModel = Annotated[Model | None, typer.Option("--model", help=_MODEL_HELP + _PLANS, show_default=False)]
Constants = Annotated[str | None, typer.Option("--constants", help=_CONSTANTS_HELP + _PLANS, show_default=False)]
PLAN_ONLY = {"model": Annotated[Model | None, typer.Option("--model", help=_MODEL_HELP, show_default=False)],
             "constants": Annotated[str | None, typer.Option("--constants", help=_CONSTANTS_HELP, show_default=False)]}
"""The annotations of ``plan``, whose help has no --plan to refer to."""
Prescribe = Annotated[Method, typer.Option("--method", help="Prescription for the predicted dose when the study "
                                           "gives no y90_planned_gbq.")]
Quick = Annotated[bool, typer.Option("--quick", help="Quick registration (24/12 mm levels, 60 iterations; coarser).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the registrations' random MI sampling.")]
LiverModel = Annotated[str, typer.Option("--liver-model", help="Liver model (shipped name or folder) for images "
                                         "without a given liver mask.")]
LesionModel = Annotated[str, typer.Option("--lesion-model", help="Lesion model (shipped name or folder) that finds the "
                                          "lesions when the study gives none to use or map; 'none': plan without lesions.")]
RegsegModel = Annotated[str, typer.Option("--regseg-model", help="Registration-segmentation network (e.g. regseg) that gives "
                                          "a session CT without a liver mask the given liver of a diagnostic CT; "
                                          "'none' (default): the liver model segments it.")]
DoseBits = Annotated[RtDoseBits, typer.Option("--rtdose-bits", help="Bits of rtstruct/rtdose.dcm: 32, or 16 for "
                                              "viewers that read only 16-bit RT Dose (dose step: peak / 65535).")]
PlanDir = Annotated[Path | None, typer.Option("--plan", help="Output folder of an earlier `sirtjax plan` of this "
                                              "study: compare with it instead of planning again.")]
PetFwhm = Annotated[float | None, typer.Option("--pet-fwhm-mm", help="Resolution (FWHM, mm) of the 90Y PET: with "
                                               "--match-fwhm-mm, and for the analytic lesion recovery curve.")]
SpectFwhm = Annotated[float | None, typer.Option("--spect-fwhm-mm", help="Resolution (FWHM, mm) of the MAA SPECT, for "
                                                 "--match-fwhm-mm.")]
MatchFwhm = Annotated[float | None, typer.Option("--match-fwhm-mm", help="Blur the PET and the MAA SPECT to this FWHM "
                                                 "(mm) before the verification's dose and its comparison with the plan.")]
RecoveryCsv = Annotated[Path | None, typer.Option("--recovery-csv", help="Measured sphere recovery curve of the PET "
                                                  "(columns volume_ml, recovery_coefficient): recovery-corrected lesion "
                                                  "means. Without it, --pet-fwhm-mm gives the analytic curve.")]
AcceptImplausible = Annotated[bool, typer.Option("--accept-implausible", help="Go on with a segmented liver outside "
                                                "0.6-4.5 L, with a warning (default: stop).")]
VERIFY_ONLY = ("plan_dir", "pet_fwhm_mm", "spect_fwhm_mm", "match_fwhm_mm", "recovery_csv")


def workflow_command(verify_too: bool, summary):
    """The typer function of ``plan`` (verify_too False) or ``verify`` (with --plan); summary(RunResult) is printed."""

    def command(
        study: Annotated[Path, typer.Argument(help="Study folder with study.json, the manifest file, or a PACS export "
                                                   "(a DICOM folder tree; see `sirtjax study`).")],
        out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (refused if it exists, unless --overwrite replaces it whole).")],
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
        radiobiology: Annotated[Path | None, typer.Option("--radiobiology", help="Tissue models (JSON, docs/radiobiology.md):"
                                                          " BED, EUD, NTCP and TCP of the doses per VOI.")] = None,
        pet_fwhm_mm: PetFwhm = None,
        spect_fwhm_mm: SpectFwhm = None,
        match_fwhm_mm: MatchFwhm = None,
        recovery_csv: RecoveryCsv = None,
        accept_implausible: AcceptImplausible = False,
    ) -> None:
        from sirtjax.cli._quantification import checked_recovery_curve
        from sirtjax.errors import InputError
        from sirtjax.pipelines.inputs import PetQuantification, UncertaintyRequest

        stated = stated_model(uncertainty, calibration_sd, residual, residual_sd, lung_shunt_sd, boundary_sd_mm)
        if not 0 <= registration_samples <= 32:
            raise InputError("--registration-samples", f"0-32 more registrations, got {registration_samples}")
        if spect_fwhm_mm is not None and match_fwhm_mm is None:
            raise InputError("--spect-fwhm-mm", "is for --match-fwhm-mm (the plan's SPECT is blurred to that resolution)")
        curve = checked_recovery_curve({"--pet-fwhm-mm": pet_fwhm_mm, "--spect-fwhm-mm": spect_fwhm_mm}, match_fwhm_mm,
                                       recovery_csv)
        pet = (None if curve is None and match_fwhm_mm is None
               else PetQuantification(match_fwhm_mm, pet_fwhm_mm, spect_fwhm_mm, curve))
        result = run_command(study, out, verify_too=verify_too, lung_shunt=lung_shunt,
                             model=None if model is None else model.value, constants=constants, method=method.value,
                             quick=quick, seed=seed, liver_model=liver_model, lesion_model=lesion_model,
                             regseg_model=regseg_model, plan_dir=plan_dir,
                             overwrite=overwrite, series=series, rtdose_bits=int(rtdose_bits.value),
                             uncertainty=None if stated is None else UncertaintyRequest(uncertainty, stated,
                                                                                        registration_samples),
                             radiobiology=radiobiology, pet=pet, accept_implausible=accept_implausible)
        typer.echo(summary(result))

    if not verify_too:  # --plan and the PET's quantification belong to verify only
        sig = inspect.signature(command, eval_str=True)  # typer reads these annotations as given
        command.__signature__ = sig.replace(parameters=[q.replace(annotation=PLAN_ONLY.get(q.name, q.annotation))
                                                        for q in sig.parameters.values() if q.name not in VERIFY_ONLY])
    return command


def _summary(result) -> str:
    p = result.plan
    return (f"planned {p.planned_activity_gbq:.3f} GBq ({p.planned_activity_source}); "
            f"{len(p.warnings)} warning(s); report: {result.report_html}")


plan = app.command("plan", help="""Plan a SIRT treatment: VOIs on the MAA SPECT, T/N, LSF, prescriptions, predicted dose, report.

Writes VOIs (CT and SPECT grids), dose.nii.gz (Gy), dvh.csv, registration fields, rtstruct/ (CT, RT-Struct, RT Dose),
report.json and report.html into OUT.""")(workflow_command(False, _summary))

"""``sirtjax plan`` and ``sirtjax verify`` as one library call: a :class:`WorkflowRequest` (the study, the output folder
and the commands' options) checked, its study read (a PACS export imported first), the
:class:`~sirtjax.pipelines.inputs.WorkflowOptions` built (:func:`~sirtjax.pipelines.segment.workflow_options`) and
:func:`~sirtjax.pipelines.run.run_study` run. An unusable option raises :class:`~sirtjax.errors.InputError` naming it
as the command line does (docs/demo.md), before anything is computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from sirtjax.dosimetry.uncertainty import EnsembleOptions
from sirtjax.errors import InputError
from sirtjax.pipelines.inputs import PetQuantification, UncertaintyRequest
from sirtjax.pipelines.read import read_plan_report
from sirtjax.pipelines.run import RunResult, run_study
from sirtjax.pipelines.segment import DEFAULT_LESION_MODEL, DEFAULT_LIVER_MODEL, workflow_options

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]
Display = Callable[[], tuple[contextlib.AbstractContextManager, Say, Progress | None]]
"""What shows a run's progress: a function giving (the display to enter, say(stage), progress(label, it, total))."""


@dataclasses.dataclass(frozen=True)
class WorkflowRequest:
    """``sirtjax plan`` (or ``verify``: verify_too) as data: the study (folder, manifest or PACS export), the output
    folder and the options; dose_model and constants None: the plan's with plan_dir, else vsv and icrp107."""

    study: Path
    out: Path
    verify_too: bool = False
    plan_dir: Path | None = None  # an earlier plan of the study to verify against (no planning)
    lung_shunt_fraction: float | None = None  # planar, in [0, 1)
    dose_model: str | None = None
    constants: str | None = None
    prescription_method: str = "partition"
    quick: bool = False
    seed: int = 0
    liver_model: str = DEFAULT_LIVER_MODEL
    lesion_model: str = DEFAULT_LESION_MODEL
    regseg_model: str = "none"
    overwrite: bool = False
    series: tuple[str, ...] = ()  # UID=NAME choices for a PACS export
    rtdose_bits: int = 32
    ensemble: EnsembleOptions = EnsembleOptions()  # the uncertainty ensemble's options
    registration_samples: int = 0  # more registrations of the lesions' source image in the ensemble
    radiobiology: Path | None = None  # tissue models (JSON)
    pet_fwhm_mm: float | None = None
    spect_fwhm_mm: float | None = None
    match_fwhm_mm: float | None = None  # blur PET and SPECT to this FWHM before the comparison
    recovery_csv: Path | None = None  # measured recovery curve of the PET
    accept_implausible: bool = False  # go on with a liver outside 0.6-4.5 L


def shown(display: Display | None) -> tuple[contextlib.AbstractContextManager, Say, Progress | None]:
    """The display's (context, say, progress), or a silent one for None."""
    return display() if display is not None else (contextlib.nullcontext(), lambda text: None, None)


def run_workflow(request: WorkflowRequest, *, programs=None, display: Display | None = None,
                 import_export: Callable[[Path, Path, list[str]], Path] | None = None) -> RunResult:
    """Check the request, read its study and run it into request.out (``programs``: the compiled programs' cache).

    A study folder without study.json is a PACS export: ``import_export(root, folder, series)`` writes it as a study
    into a temporary folder and returns its study.json; the output keeps it as ``study/``.
    """
    from sirtjax.dosimetry.bed_map import load_tissue_models
    from sirtjax.io.study import load_study
    from sirtjax.outputs import check_output

    r = request
    ensemble, pet = _quantification(r)
    model, constants = _checked_settings(r)
    dicom = r.study.is_dir() and not (r.study / "study.json").exists()
    if r.series and not dicom:
        raise InputError("--series", "chooses series of a PACS export; this study has its study.json")
    if dicom and import_export is None:
        raise InputError(r.study, "no study.json (a PACS export: make its study with `sirtjax study`)")
    with contextlib.ExitStack() as stack:
        study_path = r.study
        if dicom:
            check_output(r.out, overwrite=r.overwrite, inputs=[study_path])
            imported = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sirtjax-dicom-")))
            study_path = import_export(study_path, imported / "study", list(r.series))
        study = load_study(study_path)
        check_output(r.out, overwrite=r.overwrite, inputs=[*study.input_paths(), *([r.plan_dir] if r.plan_dir else [])])
        options = workflow_options(
            quick=r.quick, liver_model=r.liver_model, lesion_model=r.lesion_model, regseg_model=r.regseg_model,
            programs=programs, dose_model=model, constants=constants, prescription_method=r.prescription_method,
            rtdose_bits=r.rtdose_bits, uncertainty=ensemble, pet=pet, accept_implausible_liver=r.accept_implausible,
            radiobiology=None if r.radiobiology is None else load_tissue_models(r.radiobiology))
        bar, say, progress = shown(display)
        with bar:
            return run_study(study, r.out, overwrite=r.overwrite, verify_too=r.verify_too, options=options,
                             lung_shunt_fraction=r.lung_shunt_fraction, seed=r.seed, say=say, progress=progress,
                             plan_folder=r.plan_dir, copy_study=dicom)


def _quantification(r: WorkflowRequest) -> tuple[UncertaintyRequest | None, PetQuantification | None]:
    """The dose-uncertainty ensemble and the PET's quantification of a request (None: none), after checking their
    options; InputError naming the option."""
    from sirtjax.dosimetry.recovery import checked_recovery_curve

    stated = r.ensemble.stated()
    if not 0 <= r.registration_samples <= 32:
        raise InputError("--registration-samples", f"0-32 more registrations, got {r.registration_samples}")
    if r.spect_fwhm_mm is not None and r.match_fwhm_mm is None:
        raise InputError("--spect-fwhm-mm", "is for --match-fwhm-mm (the plan's SPECT is blurred to that resolution)")
    curve = checked_recovery_curve({"--pet-fwhm-mm": r.pet_fwhm_mm, "--spect-fwhm-mm": r.spect_fwhm_mm},
                                   r.match_fwhm_mm, r.recovery_csv)
    ensemble = None if stated is None else UncertaintyRequest(r.ensemble.members, stated, r.registration_samples)
    if curve is None and r.match_fwhm_mm is None:
        return ensemble, None
    return ensemble, PetQuantification(r.match_fwhm_mm, r.pet_fwhm_mm, r.spect_fwhm_mm, curve)


def _checked_settings(r: WorkflowRequest) -> tuple[str, str]:
    """The dose model and constants to use; InputError naming the option that is out of range or contradicts the
    --plan folder, or the registration-segmentation network that is none."""
    from sirtjax.dosimetry import constant_sets

    if r.lung_shunt_fraction is not None and not 0.0 <= r.lung_shunt_fraction < 1.0:
        raise InputError("--lung-shunt", f"must be in [0, 1), got {r.lung_shunt_fraction}")
    model, constants = _plan_settings(r) if r.plan_dir is not None else (r.dose_model, r.constants)
    model, constants = model or "vsv", constants or "icrp107"
    if constants not in constant_sets():
        raise InputError("--constants", f"unknown constant set '{constants}' (one of {', '.join(constant_sets())})")
    if r.seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {r.seed}")
    if r.regseg_model != "none":
        _check_regseg_model(r.regseg_model)
    return model, constants


def _plan_settings(r: WorkflowRequest) -> tuple[str, str]:
    """The dose model and constants of the plan in r.plan_dir; InputError when the request contradicts it."""
    plan_dir = r.plan_dir
    if not plan_dir.is_dir():
        raise InputError(plan_dir, "--plan takes the output folder of `sirtjax plan`; no such folder")
    if r.out.resolve() == plan_dir.resolve():
        raise InputError(r.out, "the output folder must not be the --plan folder (the plan would be overwritten)")
    record = read_plan_report(plan_dir)
    if r.lung_shunt_fraction is not None:
        raise InputError("--lung-shunt", f"not used with --plan: the plan's LSF ({record.lung_shunt_fraction:g}) "
                                         "is part of the plan")
    for option, given, used in (("--model", r.dose_model, record.dose_model),
                                ("--constants", r.constants, record.constants_name)):
        if given is not None and given != used:
            raise InputError(option, f"the plan in {plan_dir} used '{used}'; the verification must use the same")
    return record.dose_model, record.constants_name


def _check_regseg_model(name: str) -> None:
    """Refuse a registration-segmentation network that names no model or one that is not such a network."""
    from sirtjax.models.store import read_spec, spec_problem

    problem = spec_problem(read_spec(name), "liver", "ct", registration=True)
    if problem is not None:
        raise InputError("--regseg-model", f"model {name} {problem}")

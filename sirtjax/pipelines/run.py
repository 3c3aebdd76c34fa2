"""Run the workflows on a study manifest and write their folders (what ``sirtjax plan|verify|demo`` call).

Layout of ``run_study(study, out, verify=False)`` (``sirtjax plan``): the plan's files in ``out``
(:mod:`sirtjax.pipelines.outputs`). With ``verify=True`` (``sirtjax verify``, the demo): the
verification's files in ``out``, the plan it is compared with in ``out/plan/``, and
``out/report.html`` covering both. With ``plan_folder`` (``sirtjax verify --plan``): no planning;
the verification is compared with that earlier plan (:func:`sirtjax.pipelines.read.read_plan`)
and ``out`` holds the verification's files only. The folder is staged and appears complete or not
at all.
Workflow errors (ValueError) become :class:`~sirtjax.errors.InputError` naming the manifest.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from sirtjax import keys
from sirtjax.errors import InputError
from sirtjax.outputs import output_dir
from sirtjax.pipelines.inputs import WorkflowOptions
from sirtjax.pipelines.outputs import write_session_outputs
from sirtjax.pipelines.plan import PlanResult, plan
from sirtjax.pipelines.planned import planned_from_result
from sirtjax.pipelines.read import read_diagnostics, read_plan, read_session, study_data
from sirtjax.pipelines.report import workflow_report
from sirtjax.pipelines.verify import VerifyResult, verify
from sirtjax.io.study import StudyManifest


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The results and where the report is (plan None: the verification used an earlier plan's folder)."""

    plan: PlanResult | None
    verification: VerifyResult | None
    report_html: Path


def _parameters(options: WorkflowOptions, seed: int) -> dict:
    reg = ", ".join(f"{k}={v}" for k, v in options.registration.given().items()) or "preset defaults"
    return {"dose model": options.dose_model, "prescription for the predicted dose": options.prescription_method,
            "registration overrides": reg, "random seed": seed}


def run_study(study: StudyManifest, out: Path, *, verify_too: bool = False, options: WorkflowOptions = WorkflowOptions(),
              lung_shunt_fraction: float | None = None, seed: int = 0, say: Callable[[str], None] = lambda s: None,
              progress=None, subtitle: str = "", copy_study: bool = False,
              plan_folder: Path | None = None, overwrite: bool = False) -> RunResult:
    """Plan (and verify) a study into out; ``say`` gets stage names, ``progress`` registration iterations.

    ``overwrite``: replace an existing out (:mod:`sirtjax.outputs`). ``plan_folder``: verify against that earlier ``sirtjax plan`` output instead of planning (implies
    verification). ``copy_study``: copy the study's folder into ``out/study`` and record that copy,
    not the original, in the reports (the demo's phantom study lives in a temporary folder).
    """
    verify_too = verify_too or plan_folder is not None
    data = study_data(study, lung_shunt_fraction)
    k_plan, k_verify = keys.split(keys.key(seed), options.programs)
    parameters = _parameters(options, seed)
    try:
        diagnostics = read_diagnostics(study)
        p = v = None
        if plan_folder is None:
            say("reading the planning images")
            maa = read_session(study, "maa")
            say("planning (segmentation, registration, dosimetry)")
            p = plan(maa, diagnostics, data, options, key=k_plan, progress=progress)
            planned = planned_from_result(p)
        else:
            say(f"reading the plan in {plan_folder}")
            planned = read_plan(plan_folder, study)
        if verify_too:
            say("reading the verification images")
            y90 = read_session(study, "y90")
            say("verification (registration, dosimetry)")
            v = verify(y90, diagnostics, data, planned, options, key=k_verify, progress=progress)
    except ValueError as exc:  # InputError is no ValueError: it passes through naming its own file
        where = getattr(exc, "input_name", None)
        raise InputError(study.path, f"{where}: {exc}" if where else str(exc)) from None
    say("writing maps, masks, RT-Struct, RT Dose and the report")
    recorded = study.relocated(Path(out).absolute() / "study") if copy_study else study
    manifest, patient_id = recorded.to_dict(), str(study.patient.get("id", ""))
    with output_dir(out, overwrite=overwrite, inputs=[*study.input_paths(), *([plan_folder] if plan_folder else [])]) as tmp:
        if copy_study:
            shutil.copytree(study.path.parent, tmp / "study")
        if p is not None:
            plan_dir = tmp / "plan" if verify_too else tmp
            write_session_outputs(plan_dir, maa, p.vois, p.dose, p.registrations,
                                  {**p.report, "study_manifest": manifest, "parameters": parameters},
                                  workflow_report(manifest, p, subtitle=subtitle, parameters=parameters),
                                  patient_id=patient_id, rtdose_bits=options.rtdose_bits)
        if v is not None:
            write_session_outputs(tmp, y90, v.vois, v.dose, v.registrations,
                                  {**v.report, "study_manifest": manifest, "parameters": parameters},
                                  workflow_report(manifest, p, v, subtitle=subtitle, parameters=parameters),
                                  patient_id=patient_id, rtdose_bits=options.rtdose_bits)
    return RunResult(p, v, Path(out) / "report.html")

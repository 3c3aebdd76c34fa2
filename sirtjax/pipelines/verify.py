"""verify(): the SIRT verification workflow on a 90Y PET/CT (or PET/MR) session, compared with the plan.

Thesis ch. 8.4: the liver on the 90Y CT/MR (given or segmented), lesions mapped from the
diagnostic image registered onto it (or given), VOIs resampled onto the PET grid (same world
frame), dose from the PET in Bq/ml (decay corrected to the administration) with the same dose
model and statistics as the plan. The comparison per VOI (mean dose, D70, V70, V100 and their
differences, verification - plan) is made twice: against the plan as planned, and against the
plan's dose recomputed for the injected activity (same SPECT, VOIs and lung shunt), which separates
a different activity from a different distribution. With ``WorkflowOptions.uncertainty``, the PET
dose's uncertainty ensemble (PET quantification, outlines, lesion registration). The plan is data
(:class:`~sirtjax.pipelines.planned.PlannedDose`): computed in the same run, or read from the folder
of an earlier ``sirtjax plan``. With ``WorkflowOptions.pet``: the PET and the plan's MAA SPECT blurred to one
resolution first (the plan's dose recomputed from the blurred SPECT, so that both sides of the comparison have it),
and the PET dose's lesion means corrected by a recovery curve (docs/pet-quantification.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from sirtjax.dosimetry import DoseResult, ResultWarning, voxel_dosimetry
from sirtjax.dosimetry.bed_map import BedResult, radiobiology_report, workflow_radiobiology
from sirtjax.dosimetry.comparison import VoiComparison, compare_vois
from sirtjax.dosimetry.recovery import match_resolution, recovery_report
from sirtjax.pipelines.inputs import Anatomy, Session, StudyData, WorkflowOptions
from sirtjax.pipelines.mapping import Registered
from sirtjax.pipelines.plan import SessionVois, dose_uncertainty, session_warnings, session_vois, uncertainty_json
from sirtjax.pipelines.planned import PlannedDose


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Everything the verification computed; ``report`` is the JSON-ready summary (report.json)."""

    session: Session
    vois: SessionVois
    registrations: tuple[Registered, ...]
    dose: DoseResult
    plan: PlannedDose  # what the verification is compared with
    plan_at_injected: DoseResult | None  # the plan's dose recomputed for the injected activity
    comparison: tuple[VoiComparison, ...]  # plan against verification per VOI
    comparison_at_injected: tuple[VoiComparison, ...] | None
    warnings: tuple[ResultWarning, ...]
    report: dict
    uncertainty: dict | None = None  # the PET dose's ensemble summary (WorkflowOptions.uncertainty); report holds its JSON
    radiobiology: BedResult | None = None  # BED, EUD, NTCP, TCP per VOI of the PET dose (WorkflowOptions.radiobiology)


def verify(session: Session, diagnostics: Sequence[Anatomy], study: StudyData, plan: PlannedDose,
           options: WorkflowOptions = WorkflowOptions(), *, key: jax.Array, progress=None) -> VerifyResult:
    """Dose from a 90Y PET (Bq/ml) / CT session and its comparison with the plan per VOI.

    Args:
      session: the 90Y CT (or MR) with its given masks and the 90Y PET in Bq/ml (same world frame).
      diagnostics: diagnostic CT/MR images with their given masks (the lesions' source).
      study: activities (``y90_injected_gbq`` enables the comparison at the injected activity).
      plan: the plan of the same study (:func:`~sirtjax.pipelines.planned.planned_from_result` of
        :func:`sirtjax.pipelines.plan`, or :func:`~sirtjax.pipelines.read.read_plan` of its folder).
      options: registration overrides and segmenter; the dose model and constants must be the plan's
        (ValueError otherwise: the comparison would mix models).
      key: PRNG key for the registrations.
      progress: optional callback(label, iteration, max_iterations) of the registrations.
    """
    if (options.dose_model, options.constants) != (plan.dose_model, plan.constants):
        raise ValueError(f"the plan used the {plan.dose_model} model with {plan.constants} constants; "
                         f"verify with the same, not {options.dose_model} with {options.constants}")
    pet, quantification = options.pet, {}
    if pet is not None and pet.match_fwhm_mm is not None:
        session = dataclasses.replace(session, emission=match_resolution(session.emission, pet.pet_fwhm_mm,
                                                                         pet.match_fwhm_mm))
        plan = plan.at_resolution(pet.spect_fwhm_mm, pet.match_fwhm_mm, options.programs)
        quantification["resolution"] = {"pet_fwhm_mm": pet.pet_fwhm_mm, "spect_fwhm_mm": pet.spect_fwhm_mm,
                                         "matched_to_fwhm_mm": pet.match_fwhm_mm}
    vois, registrations = session_vois(session, diagnostics, options, key=key, progress=progress)
    dose = voxel_dosimetry(session.emission, vois.liver_emission, lesions=vois.lesions_emission,
                           lungs=vois.lungs_emission, input_kind="bq-per-ml", model=options.dose_model,
                           constants=options.constants, programs=options.programs)
    if pet is not None and pet.recovery is not None:
        quantification["recovery"], outside = recovery_report(dose.records(), pet.recovery)
        dose = dataclasses.replace(dose, warnings=dose.warnings + outside)
    comparison = compare_vois(plan.dose.records(), dose.records())
    injected = study.activities.get("y90_injected_gbq")
    at_injected = comparison_at = None
    if injected is not None:
        at_injected = plan.dose_at(float(injected), options.programs)
        comparison_at = compare_vois(at_injected.records(), dose.records())
    warnings = tuple(session_warnings(vois, registrations, session)) + dose.warnings
    uncertainty = None
    if options.uncertainty is not None:
        uncertainty, ensemble_warnings = dose_uncertainty(session, diagnostics, vois, registrations, None, 0.0, options, key)
        warnings += tuple(ensemble_warnings)
    bed = None
    if options.radiobiology is not None:
        bed = workflow_radiobiology(dose.dose, vois.liver_emission, vois.lesions_emission, options.radiobiology)
    pet_gbq = dose.total_gbq
    if injected is not None and pet_gbq > 1.2 * injected:
        warnings += (ResultWarning("pet_activity_above_injected",
                                      f"the PET holds {pet_gbq:.3g} GBq, more than the {injected:.3g} GBq injected: "
                                      "check its units (Bq/ml) and decay correction", pet_gbq, injected),)
    report = {
        "workflow": "verify",
        "study": study.name,
        "session": {"anatomical": session.anatomy.name, "emission": session.emission_name},
        "vois": vois.sources,
        **({"lesions_found": vois.lesions_found} if vois.lesions_found else {}),
        "registrations": [r.checks.to_json() for r in registrations],
        "dose": dose.report,
        **quantification,
        "plan": plan.source,
        "plan_activity_gbq": plan.planned_activity_gbq,
        "injected_activity_gbq": injected,
        "comparison": [c.to_dict() for c in comparison],
        "comparison_at_injected_activity": None if comparison_at is None else [c.to_dict() for c in comparison_at],
        **({} if uncertainty is None else {"uncertainty": uncertainty_json(uncertainty)}),
        **({} if bed is None else {"radiobiology": radiobiology_report(bed, options.radiobiology)}),
        "warnings": [w.to_dict() for w in warnings],
    }
    return VerifyResult(session, vois, tuple(registrations), dose, plan, at_injected, comparison, comparison_at,
                        warnings, report, uncertainty, bed)

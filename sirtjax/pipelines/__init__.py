"""The clinical workflows (thesis ch. 8): plan() on the MAA SPECT/CT session, verify() on the 90Y PET session.

``inputs`` (what the workflows take), ``mapping`` (liver given or segmented, lesions mapped by
registration), ``plan`` and ``verify`` (pure compositions of segmentation, registration and
dosimetry), ``planned`` (the plan a verification compares with: from this run or a plan folder),
``segment`` (a Segmenter from a trained liver model), ``read`` (a study manifest and a plan folder
into inputs), ``report`` (the HTML report's sections), ``outputs`` (the files of ``sirtjax plan`` /
``verify``), ``run`` (manifest -> workflows -> output folder; ``run_workflow``: what ``plan`` and ``verify`` call),
``demo`` (``run_demo``: phantom -> plan -> verification) and ``prescribe`` (``prescribe_activity``: ``sirtjax
prescribe``).
"""

from sirtjax.pipelines.inputs import (DEFAULT_TARGET_DOSES_GY, Anatomy, Segmenter, Session, StudyData,
                                      WorkflowOptions)
from sirtjax.pipelines.mapping import Registered, choose_preset, lesions_of, liver_of, register_anatomy
from sirtjax.pipelines.plan import PlanResult, SessionVois, plan
from sirtjax.pipelines.planned import PlannedDose, PlanRecord, planned_from_record, planned_from_result
from sirtjax.pipelines.read import (read_anatomy, read_diagnostics, read_plan, read_plan_report, read_session,
                                    study_data)
from sirtjax.pipelines.segment import model_available, model_segmenter
from sirtjax.pipelines.verify import VerifyResult, verify

__all__ = [
    "DEFAULT_TARGET_DOSES_GY", "Anatomy", "Segmenter", "Session", "StudyData", "WorkflowOptions", "Registered",
    "choose_preset", "lesions_of", "liver_of", "register_anatomy", "PlanResult", "SessionVois", "plan",
    "PlannedDose", "PlanRecord", "planned_from_record", "planned_from_result", "model_available", "model_segmenter",
    "read_anatomy", "read_diagnostics", "read_plan", "read_plan_report", "read_session", "study_data",
    "VerifyResult", "verify",
]

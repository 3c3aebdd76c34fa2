"""Cohorts: many registrations, doses, segmentations or plans from a manifest, resumable; registrations batched by
grid and sharded over the local devices.

``read_manifest`` (:mod:`~sirtjax.cohort.manifest`) reads the cases; ``run_cohort`` (:mod:`~sirtjax.cohort.run`)
runs this process's share of them with a task's settings (:mod:`~sirtjax.cohort.tasks`) and writes one folder per
case and a summary CSV. Under ``jax.distributed`` every process runs its own share on its own devices.
"""

from sirtjax.cohort.manifest import Case, Manifest, read_manifest
from sirtjax.cohort.run import TASKS, Batch, CohortSummary, plan_batches, run_cohort
from sirtjax.cohort.serial import DoseSettings, PlanSettings, SegmentSettings
from sirtjax.cohort.tasks import CaseOutcome, Devices, RegisterSettings, local_devices

__all__ = ["TASKS", "Batch", "Case", "CaseOutcome", "CohortSummary", "Devices", "DoseSettings", "Manifest",
           "PlanSettings", "RegisterSettings", "SegmentSettings", "local_devices", "plan_batches", "read_manifest",
           "run_cohort"]

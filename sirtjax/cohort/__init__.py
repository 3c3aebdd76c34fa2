"""Cohorts: many registrations or doses from a manifest, batched by grid, sharded over the local devices, resumable.

``read_manifest`` (:mod:`~sirtjax.cohort.manifest`) reads the cases; ``run_cohort`` (:mod:`~sirtjax.cohort.run`)
runs this process's share of them with a task's settings (:mod:`~sirtjax.cohort.tasks`) and writes one folder per
case and a summary CSV. Under ``jax.distributed`` every process runs its own share on its own devices.
"""

from sirtjax.cohort.manifest import Case, Manifest, read_manifest
from sirtjax.cohort.run import Batch, CohortSummary, plan_batches, run_cohort
from sirtjax.cohort.tasks import CaseOutcome, Devices, DoseSettings, RegisterSettings, local_devices

__all__ = ["Batch", "Case", "CaseOutcome", "CohortSummary", "Devices", "DoseSettings", "Manifest", "RegisterSettings",
           "local_devices", "plan_batches", "read_manifest", "run_cohort"]

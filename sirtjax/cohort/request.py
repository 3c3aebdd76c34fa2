"""A cohort asked for by a manifest's name and options, as ``sirtjax cohort`` takes it: every option and input checked
before anything runs, the processes joined under ``jax.distributed``, then :func:`~sirtjax.cohort.run.run_cohort`."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jax

from sirtjax.cohort.manifest import Manifest, read_manifest
from sirtjax.cohort.run import CohortSummary, recorded, run_cohort
from sirtjax.cohort.serial import DoseSettings, PlanSettings, SegmentSettings
from sirtjax.cohort.tasks import CaseOutcome, RegisterSettings, local_devices
from sirtjax.errors import InputError
from sirtjax.outputs import check_output
from sirtjax.programs import ProgramCache
from sirtjax.registration.config import Overrides
from sirtjax.registration.request import registration_settings


@dataclasses.dataclass(frozen=True)
class CohortRequest:
    """``sirtjax cohort``'s inputs: the manifest, the output folder, the task (None: the manifest's), the tasks'
    options (register: preset, config file, iterations; dose: input kind, model, constants; segment and plan:
    models, modality, quick, accept_implausible) and how to run (batch size, seed, retrying failed cases, a
    multi-process run's coordinator, process count and rank, None: from the launcher's environment)."""

    manifest: Path
    out: Path
    task: str | None = None
    batch_size: int = 8
    preset: str | None = None
    config: Path | None = None
    iterations: int | None = None
    input_kind: str = "counts"
    model: str = "vsv"
    constants: str = "icrp107"
    liver_model: str = "liver"
    lesion_model: str = "lesions"
    modality: str | None = None
    quick: bool = False
    accept_implausible: bool = False
    seed: int = 0
    retry_failed: bool = False
    distributed: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class CohortRun:
    """What a cohort call left: the summary (every case's outcome so far), the manifest's case count, and how many
    cases ended done and failed in this call."""

    summary: CohortSummary
    cases: int
    done_now: int
    failed_now: int

    @property
    def pending(self) -> int:
        """Cases with no outcome yet (another process's share, or a run stopped early)."""
        return self.cases - len(self.summary.outcomes)


def _settings(request: CohortRequest, manifest: Manifest) -> RegisterSettings | DoseSettings | SegmentSettings | PlanSettings:
    """The task's settings (:data:`~sirtjax.cohort.run.TASKS`) of a request, its options and inputs checked and its
    models found; :class:`InputError` naming the option or file."""
    if request.batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    preset, config = registration_settings(request.preset, request.config, Overrides(iterations=request.iterations))
    inputs = [request.manifest, *(p for c in manifest.cases for p in c.paths.values()),
              *([request.config] if request.config else [])]
    check_output(request.out, overwrite=True, inputs=inputs)  # the inputs kept clear and writable; a cohort folder resumes
    if manifest.task in ("segment", "plan"):  # an unknown model stops the run before it starts
        from sirtjax.models.store import resolve_model_dir  # flax: imported by the tasks that run a model only

        resolve_model_dir(request.liver_model)
        if manifest.task == "plan" and request.lesion_model != "none":
            resolve_model_dir(request.lesion_model)
    return {"register": lambda: RegisterSettings(preset, config, request.iterations),
            "dose": lambda: DoseSettings(request.input_kind, request.model, request.constants),
            "segment": lambda: SegmentSettings(request.liver_model, request.modality),
            "plan": lambda: PlanSettings(request.quick, request.liver_model, request.lesion_model,
                                         request.accept_implausible)}[manifest.task]()


def run_cohort_request(request: CohortRequest, *, programs: ProgramCache | None = None,
                       on_start: Callable[[str, int, int], None] | None = None,
                       on_outcome: Callable[[CaseOutcome], None] | None = None) -> CohortRun:
    """Check ``request`` whole, then run this process's share of its cohort into ``request.out`` (resuming it);
    ``on_start(task, cases, finished)`` hears the cohort's size and the cases already finished before anything runs,
    ``on_outcome`` each case as it ends. ``programs``: the compiled programs' cache (one device, one process)."""
    if not request.distributed and (request.coordinator, request.num_processes, request.process_id) != (None, None, None):
        raise InputError("--coordinator", "--coordinator, --num-processes and --process-id need --distributed")
    if request.distributed and request.overwrite:
        raise InputError("--overwrite", "cannot start a multi-process cohort over an old one; remove the folder first")
    if request.distributed:
        jax.distributed.initialize(request.coordinator, request.num_processes, request.process_id)
    manifest = read_manifest(request.manifest, request.task)
    settings = _settings(request, manifest)
    if request.overwrite and request.out.exists():  # only once every input has been checked
        try:
            shutil.rmtree(request.out)
        except OSError as exc:
            raise InputError(request.out, f"cannot remove the old output: {exc}") from None
    if on_start is not None:
        held = [recorded(request.out, c.id) for c in manifest.cases] if (request.out / "cohort.json").exists() else []
        on_start(manifest.task, len(manifest.cases),
                 sum(o is not None and not (request.retry_failed and o.status == "failed") for o in held))
    ended: Counter[str] = Counter()

    def count(outcome: CaseOutcome) -> None:
        ended[outcome.status] += 1
        if on_outcome is not None:
            on_outcome(outcome)

    summary = run_cohort(manifest, request.out, settings, devices=local_devices(programs), batch_size=request.batch_size,
                         seed=request.seed, retry_failed=request.retry_failed, on_outcome=count)
    return CohortRun(summary, len(manifest.cases), ended["done"], ended["failed"])

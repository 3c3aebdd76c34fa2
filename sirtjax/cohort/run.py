"""A cohort run: the manifest's cases in batches of one bucket, resumable, shared among processes, summarised.

The batches are a function of the manifest and the settings alone: the cases grouped by their task's bucket key
(in the order of each key's first case), then cut into runs of ``batch_size`` in manifest order. Batch ``i`` draws
its random numbers from ``fold_in(key(seed), i)`` and runs in process ``i % process_count``, so a resumed,
re-sharded or multi-process run computes every case in the same batch with the same numbers (to float rounding:
other device counts reduce in other orders).

The output folder holds ``cohort.json`` (the manifest and settings: a later run on the folder must match them),
one folder per finished case (written whole), ``.failed/<id>.json`` per failed case, and ``summary.csv``, rewritten
after every batch (one row per case: done, failed or pending). A run reads the records once and keeps them in
memory; under ``jax.distributed`` the last summary is read again from the folder, once every process is done.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax

from sirtjax import keys
from sirtjax.cohort.manifest import Case, Manifest
from sirtjax.cohort.serial import DoseSettings, PlanSettings, SegmentSettings, no_key, run_dose, run_plan, run_segment
from sirtjax.cohort.tasks import CaseOutcome, Devices, RegisterSettings, publish, register_key, run_register
from sirtjax.errors import InputError
from sirtjax.outputs import atomic_path, write_json


TASKS: dict[str, tuple[type, Callable, Callable]] = {
    "register": (RegisterSettings, register_key, run_register),
    "dose": (DoseSettings, no_key, run_dose),
    "segment": (SegmentSettings, no_key, run_segment),
    "plan": (PlanSettings, no_key, run_plan),
}
"""Per task: its settings type, its bucket key (case, settings) -> tuple, and its batch runner (cases, settings, key,
out, devices, todo, publisher) -> outcomes (or their Futures, from the publisher, while their folders are written)."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """Cases of one bucket run together; ``index`` is the batch's place in the cohort (its random stream)."""

    index: int
    cases: tuple[Case, ...]


@dataclasses.dataclass(frozen=True)
class CohortSummary:
    """What a run left: every case's outcome so far (manifest order; pending cases absent) and the summary's path."""

    outcomes: tuple[CaseOutcome, ...]
    summary_csv: Path

    def count(self, status: str) -> int:
        """How many cases ended with ``status`` (done or failed)."""
        return sum(o.status == status for o in self.outcomes)


def plan_batches(manifest: Manifest, settings, batch_size: int) -> list[Batch]:
    """The cohort's batches (see the module docstring); raises :class:`InputError` for a case the task cannot run."""
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    key_fn = TASKS[manifest.task][1]
    buckets: dict[tuple, list[Case]] = {}
    for case in manifest.cases:
        buckets.setdefault(key_fn(case, settings), []).append(case)
    chunks = [(k, cases[i:i + batch_size]) for k, cases in buckets.items() for i in range(0, len(cases), batch_size)]
    return [Batch(i, tuple(c)) for i, (_, c) in enumerate(chunks)]


def open_cohort(out: Path, manifest: Manifest, settings, batch_size: int, seed: int) -> None:
    """Start ``out`` for this cohort, or check that it holds the same cohort (to resume); InputError otherwise."""
    record = {"task": manifest.task, "settings": dataclasses.asdict(settings), "batch_size": batch_size,
              "seed": seed, "cases": [c.to_dict() for c in manifest.cases]}
    record = json.loads(json.dumps(record))
    path = out / "cohort.json"
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read the cohort record: {exc}") from None
        if held != record:
            raise InputError(out, "holds a cohort with another manifest or settings; choose another folder "
                                  "(or --overwrite to start again)")
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "the output exists and is not a cohort folder; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, path)


def recorded(out: Path, case_id: str) -> CaseOutcome | None:
    """A case's recorded outcome: its folder's case.json (done), else .failed/<id>.json, else None (pending)."""
    for path in (out / case_id / "case.json", out / ".failed" / f"{case_id}.json"):
        if path.exists():
            try:
                return CaseOutcome(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise InputError(path, f"cannot read the case's record ({exc}); remove it to run the case again") from None
    return None


def run_cohort(
    manifest: Manifest,
    out: str | Path,
    settings,
    *,
    devices: Devices,
    batch_size: int = 8,
    seed: int = 0,
    retry_failed: bool = False,
    on_outcome: Callable[[CaseOutcome], None] | None = None,
) -> CohortSummary:
    """Run this process's share of the cohort's batches into ``out``, skipping finished cases (and failed ones unless
    ``retry_failed``); call ``on_outcome`` as each case ends. ``settings``: the task's settings type
    (:data:`TASKS`). A batch runs whole if any of its cases is still to do (so its cases see
    the same batch as in an uninterrupted run), and only those cases are written. A batch's folders are written in a
    thread while the next batch runs; its outcomes are recorded (``.failed``, the summary, ``on_outcome``) once they
    are written, so a kill loses at most the folders under way, which a resumed run makes again."""
    out = Path(out)
    settings_type, _, run_batch = TASKS[manifest.task]
    if not isinstance(settings, settings_type):
        raise TypeError(f"the {manifest.task} task takes {settings_type.__name__}")
    batches = plan_batches(manifest, settings, batch_size)  # every case checked before anything is written
    rank, ranks = jax.process_index(), jax.process_count()
    if rank == 0:
        open_cohort(out, manifest, settings, batch_size, seed)
    _barrier(ranks, "sirtjax cohort: folder opened")
    if rank != 0:
        open_cohort(out, manifest, settings, batch_size, seed)  # only checks the record rank 0 wrote
    held = {c.id: recorded(out, c.id) for c in manifest.cases}  # read once, then kept up to date in memory

    def record(outcomes: list) -> None:
        """A batch's outcomes (Futures waited for) into the records, the summary and ``on_outcome``."""
        for outcome in (o.result() if isinstance(o, Future) else o for o in outcomes):
            if outcome.status == "failed":
                (out / ".failed").mkdir(exist_ok=True)
                write_json(outcome.to_dict(), out / ".failed" / f"{outcome.id}.json")
            elif (out / ".failed" / f"{outcome.id}.json").exists():
                os.remove(out / ".failed" / f"{outcome.id}.json")
            held[outcome.id] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
        if outcomes:
            write_summary(out, manifest, held)

    writing: list = []  # the previous batch's outcomes, its folders being written
    with ThreadPoolExecutor(1, thread_name_prefix="sirtjax-cohort-writer") as writer:
        for batch in batches:
            if batch.index % ranks != rank:
                continue
            todo = frozenset(c.id for c in batch.cases if _to_do(held[c.id], retry_failed))
            if not todo:
                continue
            key = keys.fold_in(keys.key(seed), batch.index, devices.programs)
            outcomes = run_batch(batch.cases, settings, key, out, devices, todo,
                                 lambda *args: writer.submit(publish, *args))
            record(writing)
            writing = [o for o in outcomes if isinstance(o, Future) or o.id in todo]  # Futures: cases in todo
        record(writing)
    _barrier(ranks, "sirtjax cohort: every share done")  # then the summary sees every process's cases
    return write_summary(out, manifest, held if ranks == 1 else None)


def _barrier(ranks: int, name: str) -> None:
    """Wait for every process of a multi-process run (nothing to wait for with one)."""
    if ranks > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _to_do(outcome: CaseOutcome | None, retry_failed: bool) -> bool:
    return outcome is None or (retry_failed and outcome.status == "failed")


def write_summary(out: Path, manifest: Manifest, held: Mapping[str, CaseOutcome | None] | None = None) -> CohortSummary:
    """Rebuild ``summary.csv`` (atomically) from ``held`` (id -> outcome or None; None: read the records in ``out``):
    id, status, seconds, reason, then the task's numbers; pending cases have the status ``pending``."""
    outcomes = [recorded(out, c.id) if held is None else held[c.id] for c in manifest.cases]
    metrics = sorted({k for o in outcomes if o is not None for k in o.metrics})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "status", "seconds", "reason", *metrics])
    for case, o in zip(manifest.cases, outcomes):
        if o is None:
            writer.writerow([case.id, "pending", "", "", *[""] * len(metrics)])
        else:
            writer.writerow([o.id, o.status, f"{o.seconds:.3f}", o.reason,
                             *[_cell(o.metrics.get(k)) for k in metrics]])
    path = out / "summary.csv"
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue())
    return CohortSummary(tuple(o for o in outcomes if o is not None), path)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)

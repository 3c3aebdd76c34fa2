"""``sirtjax cohort MANIFEST -o DIR``: a manifest's registrations, doses, segmentations or plans, resumable (docs/cohort.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import ConstantSet, InputKind, Modality, Model, Overwrite, Preset, app, program_cache, progress_bar


@app.command()
def cohort(
    manifest: Annotated[Path, typer.Argument(help="CSV or JSON of cases, e.g. a CSV with the header id,fixed,moving,fixed_mask,moving_mask (register), id,activity,liver (dose), id,image (segment) or id,study (plan).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: one folder per case, summary.csv.")],
    task: Annotated[str | None, typer.Option(help="register, dose, segment or plan (default: the manifest's, or from its columns).")] = None,
    batch_size: Annotated[int, typer.Option(help="Cases per batch (vmapped; split over the local devices).")] = 8,
    preset: Annotated[Preset | None, typer.Option(show_default=False, help="register: the preset (default: from each case's masks or label maps).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="register: JSON registration settings replacing the preset's (as sirtjax register --config).")] = None,
    iterations: Annotated[int | None, typer.Option(help="register: maximum iterations per level and stage (default: the preset's).")] = None,
    input_kind: Annotated[InputKind, typer.Option("--input", help="dose: what the activity images hold.")] = InputKind.counts,
    model: Annotated[Model, typer.Option(help="dose: voxel S-value kernel or local deposition.")] = Model.vsv,
    constants: Annotated[ConstantSet, typer.Option(help="dose: the 90Y constant set.")] = ConstantSet.icrp107,
    liver_model: Annotated[str, typer.Option(help="segment, plan: the liver model (shipped name or folder).")] = "liver",
    lesion_model: Annotated[str, typer.Option(help="plan: the lesion model for studies without lesions ('none': plan without).")] = "lesions",
    modality: Annotated[Modality | None, typer.Option(help="segment: the modality (default: guessed per image).", show_default=False)] = None,
    quick: Annotated[bool, typer.Option(help="plan: the quick registration (24/12 mm levels; coarser).")] = False,
    accept_implausible: Annotated[bool, typer.Option("--accept-implausible", help="plan: go on with a segmented liver outside 0.6-4.5 L (default: that case fails).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random similarity samples (batch i uses fold_in(seed, i)).")] = 0,
    retry_failed: Annotated[bool, typer.Option(help="Run the cases that failed before again (default: keep them failed).")] = False,
    distributed: Annotated[bool, typer.Option(help="Join a multi-process run (jax.distributed.initialize: from the launcher's environment, e.g. SLURM or Open MPI, or from the three options below); each process takes its share.")] = False,
    coordinator: Annotated[str | None, typer.Option(help="--distributed: the coordinator's host:port (process 0's).")] = None,
    num_processes: Annotated[int | None, typer.Option(help="--distributed: the number of processes.")] = None,
    process_id: Annotated[int | None, typer.Option(help="--distributed: this process's rank, 0 .. n-1.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Run every case of MANIFEST into OUT; a second call on OUT resumes where the first stopped."""
    from sirtjax.cohort.request import CohortRequest, run_cohort_request

    request = CohortRequest(manifest, out, task, batch_size, preset and preset.value, config, iterations,
                            input_kind.value, model.value, constants.value, liver_model, lesion_model,
                            modality and modality.value, quick, accept_implausible, seed, retry_failed, distributed,
                            coordinator, num_processes, process_id, overwrite)
    with _cases_bar() as (on_start, on_outcome):
        run = run_cohort_request(request, programs=program_cache(), on_start=on_start, on_outcome=on_outcome)
    summary = run.summary
    typer.echo(f"{summary.count('done')} done, {summary.count('failed')} failed, {run.pending} pending "
               f"({run.done_now} done and {run.failed_now} failed in this run) -> {summary.summary_csv}")
    for o in summary.outcomes:
        if o.status == "failed":
            typer.echo(f"failed: {o.id}: {o.reason}", err=True)


@contextlib.contextmanager
def _cases_bar():
    """A progress bar of a cohort's cases with this run's rate; yields its callbacks (on_start, on_outcome)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    started = {}
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()) as bar:

        def on_start(task: str, cases: int, finished: int) -> None:
            started.update(id=bar.add_task(f"{task} cohort", total=cases, completed=finished, rate=""), finished=finished)

        def on_outcome(outcome) -> None:
            task = bar.tasks[started["id"]]
            n = task.completed + 1 - started["finished"]  # cases ended in this run, this one included
            bar.update(started["id"], advance=1, rate=f"{n / task.elapsed:.2f} cases/s" if task.elapsed else "")

        yield on_start, on_outcome

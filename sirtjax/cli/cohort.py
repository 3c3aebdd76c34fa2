"""``sirtjax cohort MANIFEST -o DIR``: a manifest's registrations, doses, segmentations or plans, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import ConstantSet, InputKind, Modality, Model, Overwrite, Preset, app, program_cache, progress_bar


@app.command()
def cohort(
    manifest: Annotated[Path, typer.Argument(help="CSV or JSON of cases, e.g. a CSV with the header "
                                                  "id,fixed,moving,fixed_mask,moving_mask (register), "
                                                  "id,activity,liver (dose), id,image (segment) or id,study (plan).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: one folder per case, summary.csv.")],
    task: Annotated[str | None, typer.Option(help="register, dose, segment or plan (default: the manifest's, or from "
                                                  "its columns).")] = None,
    batch_size: Annotated[int, typer.Option(help="Cases per batch (vmapped; split over the local devices).")] = 8,
    preset: Annotated[Preset | None, typer.Option(show_default=False, help="register: the preset (default: "
                                                    "from each case's masks or label maps).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="register: JSON registration settings replacing "
                                                                 "the preset's (as sirtjax register --config).")] = None,
    iterations: Annotated[int | None, typer.Option(help="register: maximum iterations per level and stage "
                                                        "(default: the preset's).")] = None,
    input_kind: Annotated[InputKind, typer.Option("--input", help="dose: what the activity images hold.")] = InputKind.counts,
    model: Annotated[Model, typer.Option(help="dose: voxel S-value kernel or local deposition.")] = Model.vsv,
    constants: Annotated[ConstantSet, typer.Option(help="dose: the 90Y constant set.")] = ConstantSet.icrp107,
    liver_model: Annotated[str, typer.Option(help="segment, plan: the liver model (shipped name or folder).")] = "liver",
    lesion_model: Annotated[str, typer.Option(help="plan: the lesion model for studies without lesions ('none': plan "
                                                   "without).")] = "lesions",
    modality: Annotated[Modality | None, typer.Option(help="segment: the modality (default: guessed per image).", show_default=False)] = None,
    quick: Annotated[bool, typer.Option(help="plan: the quick registration (24/12 mm levels; coarser).")] = False,
    accept_implausible: Annotated[bool, typer.Option("--accept-implausible", help="plan: go on with a segmented liver "
                                                     "outside 0.6-4.5 L (default: that case fails).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random similarity samples (batch i uses fold_in(seed, i)).")] = 0,
    retry_failed: Annotated[bool, typer.Option(help="Run the cases that failed before again (default: keep them failed).")] = False,
    distributed: Annotated[bool, typer.Option(help="Join a multi-process run (jax.distributed.initialize: from the "
                                                   "launcher's environment, e.g. SLURM or Open MPI, or from the three "
                                                   "options below); each process takes its share.")] = False,
    coordinator: Annotated[str | None, typer.Option(help="--distributed: the coordinator's host:port (process 0's).")] = None,
    num_processes: Annotated[int | None, typer.Option(help="--distributed: the number of processes.")] = None,
    process_id: Annotated[int | None, typer.Option(help="--distributed: this process's rank, 0 .. n-1.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Run every case of MANIFEST into OUT; a second call on OUT resumes where the first stopped."""
    import jax
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sirtjax.cohort import (DoseSettings, PlanSettings, RegisterSettings, SegmentSettings, local_devices,
                                read_manifest, run_cohort)
    from sirtjax.models.store import resolve_model_dir
    from sirtjax.cohort.run import recorded
    from sirtjax.errors import InputError
    from sirtjax.outputs import check_output
    from sirtjax.registration.files import load_config

    if not distributed and (coordinator, num_processes, process_id) != (None, None, None):
        raise InputError("--coordinator", "--coordinator, --num-processes and --process-id need --distributed")
    if distributed and overwrite:
        raise InputError("--overwrite", "cannot start a multi-process cohort over an old one; remove the folder first")
    if distributed:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    cases = read_manifest(manifest, task)
    if batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    if iterations is not None and iterations < 1:
        raise InputError("--iterations", "must be at least 1")
    preset = None if preset is None else preset.value
    inputs = [manifest, *(p for c in cases.cases for p in c.paths.values()), *([config] if config else [])]
    check_output(out, overwrite=True, inputs=inputs)  # the inputs kept clear and writable; a cohort folder resumes
    modality = None if modality is None else modality.value
    if cases.task in ("segment", "plan"):
        resolve_model_dir(liver_model)  # an unknown model stops the run before it starts
    if cases.task == "plan" and lesion_model != "none":
        resolve_model_dir(lesion_model)
    base = None if config is None else load_config(config)
    settings = {"register": lambda: RegisterSettings(preset, base, iterations),
                "dose": lambda: DoseSettings(input_kind.value, model.value, constants.value),
                "segment": lambda: SegmentSettings(liver_model, modality),
                "plan": lambda: PlanSettings(quick, liver_model, lesion_model, accept_implausible)}[cases.task]()
    if overwrite and out.exists():  # only once every input has been checked
        try:
            shutil.rmtree(out)
        except OSError as exc:
            raise InputError(out, f"cannot remove the old output: {exc}") from None
    done = {"done": 0, "failed": 0}
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        held = [recorded(out, c.id) for c in cases.cases] if (out / "cohort.json").exists() else []
        before = sum(o is not None and not (retry_failed and o.status == "failed") for o in held)
        bar_task = bar.add_task(f"{cases.task} cohort", total=len(cases.cases), completed=before, rate="")

        def on_outcome(outcome) -> None:
            done[outcome.status] += 1
            elapsed = bar.tasks[bar_task].elapsed or 0.0
            n = done["done"] + done["failed"]
            bar.update(bar_task, advance=1, rate=f"{n / elapsed:.2f} cases/s" if elapsed else "")

        summary = run_cohort(cases, out, settings, devices=local_devices(program_cache()), batch_size=batch_size,
                             seed=seed, retry_failed=retry_failed, on_outcome=on_outcome)
    pending = len(cases.cases) - len(summary.outcomes)
    typer.echo(f"{summary.count('done')} done, {summary.count('failed')} failed, {pending} pending "
               f"({done['done']} done and {done['failed']} failed in this run) -> {summary.summary_csv}")
    for o in summary.outcomes:
        if o.status == "failed":
            typer.echo(f"failed: {o.id}: {o.reason}", err=True)

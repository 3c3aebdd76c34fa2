"""``sirtjax register``: affine + non-rigid registration of a moving image onto a fixed image (docs/register.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Metric, Overwrite, Preset, app, program_cache, progress_bar


@app.command()
def register(
    fixed: Annotated[Path, typer.Argument(help="Fixed (reference) image: NIfTI file or DICOM folder.")],
    moving: Annotated[Path, typer.Argument(help="Moving (floating) image, warped onto the fixed grid.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    fixed_mask: Annotated[Path | None, typer.Option(help="Fixed liver mask (0/1): CNN-guided.")] = None,
    moving_mask: Annotated[Path | None, typer.Option(help="Moving liver mask (0/1).")] = None,
    fixed_labels: Annotated[Path | None, typer.Option(help="Fixed label map (liver 1, landmarks >= 2): CNN&LM-guided.")] = None,
    moving_labels: Annotated[Path | None, typer.Option(help="Moving label map, same ids as the fixed one.")] = None,
    preset: Annotated[Preset | None, typer.Option(help="Default: from the guidance given (image-based, cnn-guided with masks, cnn-lm-guided with label maps).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON registration settings replacing the preset's; options given on the command line still override them.")] = None,
    metric: Annotated[Metric | None, typer.Option(help="Image similarity: mi (multi-modal, the presets' default) or ssd (same modality).", show_default=False)] = None,
    apply: Annotated[list[Path] | None, typer.Option("--apply", help="Extra moving-space image to warp (repeatable); integer images with at most 256 values are label maps (nearest).")] = None,
    apply_labels: Annotated[list[Path] | None, typer.Option("--apply-labels", help="Extra moving-space label map, warped by nearest neighbour (repeatable).")] = None,
    w_image: Annotated[float | None, typer.Option(help="Weight of the non-rigid image term w_I; 0 leaves the term out (cnn-guided default 0: masks only).")] = None,
    w_seg: Annotated[float | None, typer.Option(help="Weight of the segmentation term w_S.")] = None,
    stiffness: Annotated[float | None, typer.Option(help="Weight of the spring regulariser w_R.")] = None,
    liver_stiffness: Annotated[float | None, typer.Option(help="Stiffness inside the fixed liver relative to outside (thesis 6.5).")] = None,
    affine_only: Annotated[bool, typer.Option(help="Stop after the affine stage.")] = False,
    levels: Annotated[int | None, typer.Option(help="Pyramid levels, the coarsest 2**(levels-1) x the finest (default: the preset's, 3).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Maximum iterations per level of the affine and the guided non-rigid stage (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random MI sampling.")] = 0,
    compress: Annotated[bool, typer.Option("--compress/--no-compress", help="Images as .nii.gz; --no-compress writes .nii, much faster for the float field.")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Register MOVING onto FIXED; writes warped.nii.gz, displacement.nii.gz (ITK), affine.json, report.json."""
    from sirtjax.registration.config import Overrides
    from sirtjax.registration.request import RegistrationRequest, register_files

    overrides = Overrides(metric=metric and metric.value, levels=levels, iterations=iterations, w_image=w_image,
                          w_seg=w_seg, w_reg=stiffness, liver_stiffness=liver_stiffness,
                          nonrigid_levels=0 if affine_only else None)
    request = RegistrationRequest(fixed, moving, out, fixed_mask, moving_mask, fixed_labels, moving_labels,
                                  preset and preset.value, config, overrides, tuple(apply or ()),
                                  tuple(apply_labels or ()), seed, overwrite, compress)
    with _levels_bar() as progress:
        run = register_files(request, progress=progress, programs=program_cache())
    liver = "" if run.liver_nonpositive_fraction is None else f" ({100 * run.liver_nonpositive_fraction:.3f} % of the fixed liver)"
    typer.echo(f"registered ({run.checked.preset}) in {run.total_s:.1f} s (compile {run.compile_s:.1f} s); "
               f"det J <= 0 in {100 * run.nonpositive_fraction:.3f} % of voxels{liver} -> {out}")
    for w in run.warnings:
        typer.echo(f"warning: {w.message}", err=True)


@contextlib.contextmanager
def _levels_bar():
    """A progress bar with a line per registration stage and level; yields the callback (label, iteration, total)."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with progress_bar(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn()) as bar:

        def progress(label: str, it: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=it)

        yield progress

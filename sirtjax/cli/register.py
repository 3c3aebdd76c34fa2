"""``sirtjax register``: affine + non-rigid registration of a moving image onto a fixed image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Metric, Overwrite, Preset, app, program_cache, progress_bar
from sirtjax.errors import InputError

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
    config: Annotated[Path | None, typer.Option("--config", help="JSON registration settings replacing the preset's (the presets' own are configs/registration/*.json in the sirtjax repository); options given on the command line still override.")] = None,
    metric: Annotated[Metric | None, typer.Option(help="Image similarity: mi (multi-modal) or ssd (same modality). Default: the preset's (mi).", show_default=False)] = None,
    apply: Annotated[list[Path] | None, typer.Option("--apply", help="Extra moving-space image to warp (repeatable); integer images with at most 256 values are label maps (nearest).")] = None,
    apply_labels: Annotated[list[Path] | None, typer.Option("--apply-labels", help="Extra moving-space label map, warped by nearest neighbour (repeatable).")] = None,
    w_image: Annotated[float | None, typer.Option(help="Weight of the non-rigid image term w_I; 0 leaves the term out (cnn-guided default 0: masks only).")] = None,
    w_seg: Annotated[float | None, typer.Option(help="Weight of the segmentation term w_S.")] = None,
    stiffness: Annotated[float | None, typer.Option(help="Weight of the spring regulariser w_R.")] = None,
    liver_stiffness: Annotated[float | None, typer.Option(help="Stiffness inside the fixed liver relative to outside (thesis 6.5).")] = None,
    affine_only: Annotated[bool, typer.Option(help="Stop after the affine stage.")] = False,
    levels: Annotated[int | None, typer.Option(help="Pyramid levels (coarsest 2**(levels-1) x the finest). Default: the preset's (3).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Maximum iterations per level of the affine and the guided non-rigid stage (a level stops earlier once its loss flattens). Default: the preset's.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random MI sampling.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Register MOVING onto FIXED; writes warped.nii.gz, displacement.nii.gz (ITK), affine.json, report.json."""
    import jax
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from sirtjax.io import read_volume
    from sirtjax.outputs import check_output, output_dir
    from sirtjax.registration import Overrides
    from sirtjax.registration.files import load_config, load_guidance, registration_report, write_registration
    from sirtjax.registration.guided import check_guidance, choose_preset, register_checked

    t_start = time.perf_counter()
    if (fixed_mask is None) != (moving_mask is None):
        raise InputError(fixed_mask or moving_mask, "give both --fixed-mask and --moving-mask")
    if (fixed_labels is None) != (moving_labels is None):
        raise InputError(fixed_labels or moving_labels, "give both --fixed-labels and --moving-labels")
    paths = {"fixed_mask": fixed_mask, "moving_mask": moving_mask, "fixed_labels": fixed_labels, "moving_labels": moving_labels}
    preset = choose_preset(masks=fixed_mask is not None, labels=fixed_labels is not None) if preset is None else preset.value
    metric = None if metric is None else metric.value
    try:
        check_guidance(preset, [name for name, path in paths.items() if path is not None])
    except ValueError as exc:
        raise InputError(Path(preset), str(exc)) from None
    for name, value in (("--levels", levels), ("--iterations", iterations)):
        if value is not None and value < 1:
            raise InputError(Path(name), "must be at least 1")
    for name, value in (("w-image", w_image), ("w-seg", w_seg), ("stiffness", stiffness), ("liver-stiffness", liver_stiffness)):
        if value is not None and not value >= 0:
            raise InputError(Path(f"--{name}"), f"must be a non-negative number, got {value}")
    inputs = [p for p in (fixed, moving, fixed_mask, moving_mask, fixed_labels, moving_labels, config,
                          *(apply or []), *(apply_labels or [])) if p is not None]
    check_output(out, overwrite=overwrite, inputs=inputs)
    base = None if config is None else load_config(config)
    if base is not None and base.affine.on == "segmentation" and preset == "image-based":
        raise InputError(config, "an affine on segmentations needs masks or label maps")

    fixed_vol = read_volume(fixed)
    moving_vol = read_volume(moving)
    guidance, warnings = load_guidance(paths, fixed_vol, moving_vol, preset)
    extra = [(p, v, 0 if _is_label_map(v.array) else 1) for p, v in ((p, read_volume(p)) for p in apply or [])]
    extra += [(p, read_volume(p), 0) for p in apply_labels or []]

    overrides = Overrides(metric=metric, levels=levels, iterations=iterations, w_image=w_image, w_seg=w_seg,
                          w_reg=stiffness, liver_stiffness=liver_stiffness, nonrigid_levels=0 if affine_only else None)

    with progress_bar(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn()) as bar:
        tasks: dict[str, int] = {}

        def progress(label: str, it: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=it)

        checked = register_checked(fixed_vol, moving_vol, guidance, preset=preset, config=base,
                                   overrides=overrides, key=jax.random.key(seed), progress=progress,
                                   programs=program_cache())

    warnings += list(checked.warnings)
    report = registration_report(checked, warnings, fixed=str(fixed), moving=str(moving),
                                 config_file=None if config is None else str(config))
    with output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        report["total_s"] = time.perf_counter() - t_start
        write_registration(tmp, checked, report, extra)
    liver_fold = (f" ({100 * report['jacobian_liver']['fraction_nonpositive']:.3f} % of the fixed liver)"
                  if "jacobian_liver" in report else "")
    typer.echo(
        f"registered ({preset}) in {report['total_s']:.1f} s (compile {report['compile_s']:.1f} s); "
        f"det J <= 0 in {100 * checked.jacobian['fraction_nonpositive']:.3f} % of voxels{liver_fold} -> {out}"
    )
    for w in warnings:
        typer.echo(f"warning: {w.message}", err=True)


def _is_label_map(array) -> bool:
    """Integer voxels with at most 256 distinct values: a label map, warped by nearest neighbour."""
    import numpy as np

    a = np.asarray(array)
    return np.issubdtype(a.dtype, np.integer) and np.unique(a).size <= 256

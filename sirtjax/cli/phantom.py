"""``sirtjax phantom OUT``: write a synthetic SIRT study folder with its montage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Overwrite, app, progress_bar


def write_phantom_folder(out: Path, seed: int, small: bool, overwrite: bool = False) -> Path:
    """Generate the study of a seed, write it and montage.png into out (atomically); returns out."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from sirtjax.errors import InputError
    from sirtjax.outputs import check_output, output_dir
    from sirtjax.phantom import PhantomConfig, generate_study, write_study
    from sirtjax.phantom.montage import write_montage

    if seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed}")
    check_output(out, overwrite=overwrite)
    config = PhantomConfig.small() if small else PhantomConfig()
    with progress_bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("generating the phantom study", total=None)
        study = generate_study(seed, config, progress=lambda stage: bar.update(task, description=stage))
        bar.update(task, description="writing images")
        with output_dir(out, overwrite=overwrite) as tmp:
            write_study(study, tmp)
            bar.update(task, description="drawing the montage")
            write_montage(study.images, tmp / "montage.png")
    return out


@app.command()
def phantom(
    out: Annotated[Path, typer.Argument(help="Output folder for the study (refused if it exists, unless --overwrite).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (non-negative); the same seed gives the same files.")] = 0,
    small: Annotated[bool, typer.Option("--small", help="Coarse 6 mm study for quick tests.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Write a phantom SIRT study: MAA SPECT/CT, diagnostic CT and MR, 90Y PET/CT, labels, truth.

    Files: maa_ct, maa_spect, diag_ct, diag_mr, y90_ct, y90_pet (.nii.gz), label maps
    X_liver, X_lesions, X_lungs, X_labels per anatomical image X, truth.json, study.json and
    montage.png.
    """
    write_phantom_folder(out, seed, small, overwrite)
    typer.echo(f"phantom study (seed {seed}) written to {out}; montage: {out / 'montage.png'}")

"""``sirtjax segment IMAGE -o MASK``: liver segmentation with a shipped or user-trained U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirtjax.cli._app import Overwrite, app, progress_bar


@app.command()
def segment(
    image: Annotated[Path, typer.Argument(help="CT or T1 MR image: NIfTI/MHA/NRRD file or DICOM series folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output mask (.nii.gz), 0/1 on the image's grid.")],
    model: Annotated[str, typer.Option("--model", help="Shipped model name or a model/run folder.")] = "liver",
    modality: Annotated[Optional[str], typer.Option("--modality", help="ct or mr (default: the image's minimum < -500 means CT).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average predictions over axis flips (4x slower).")] = False,
    probability: Annotated[Optional[Path], typer.Option("--probability", help="Also write the probability map here.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Segment the liver: 3 mm canonical grid, windowing, sliding-window U-Net, largest component."""
    import numpy as np
    
    from sirtjax.errors import InputError
    from sirtjax.io import read_volume, write_volume
    from sirtjax.models import load_model
    from sirtjax.outputs import check_output
    from sirtjax.segmentation import liver_mask, predict_probability
    from sirtjax.segmentation.postprocess import liver_warnings
    from sirtjax.segmentation.preprocess import MODALITIES, guess_modality

    if modality is not None and modality not in MODALITIES:
        raise InputError("--modality", f"must be one of {', '.join(MODALITIES)}, got {modality!r}")
    for path in (out, probability) if probability is not None else (out,):
        check_output(path, overwrite=overwrite, folder=False, inputs=(image,))
    if probability is not None and probability.resolve() == out.resolve():
        raise InputError(probability, "--probability must differ from the mask output")
    vol = read_volume(image)
    net, spec = load_model(model)
    if modality is None:
        modality = guess_modality(vol.array)
        typer.echo(f"modality: {modality} (guessed from the intensities; pass --modality to set it)")
    if modality not in spec.get("modalities", MODALITIES):
        raise InputError("--modality", f"model {model} was trained for {spec.get('modalities')}, not {modality}")
    with progress_bar() as bar:
        task = bar.add_task("segmenting", total=None)
        prob = predict_probability(net, spec, vol, modality=modality, tta=tta, on_batch=lambda d, n: bar.update(task, completed=d, total=n))
    mask = prob.with_array(liver_mask(np.asarray(prob.array)))
    write_volume(mask, out, dtype=np.uint8)
    if probability is not None:
        write_volume(prob, probability, dtype=np.float32)
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000.0
    typer.echo(f"liver: {int(mask.array.sum()) * voxel_ml:.1f} ml -> {out}")
    for line in liver_warnings(np.asarray(prob.array), voxel_ml):
        typer.echo(f"warning: {line}", err=True)

"""``sirtjax segment IMAGE -o MASK [--target lesions]``: liver or lesion segmentation with shipped or user-trained U-Nets
(docs/segment.md)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from sirtjax.cli._app import Modality, Overwrite, app, program_cache, progress_bar

if TYPE_CHECKING:
    from sirtjax.segmentation.request import SegmentRequest, SegmentResult


class Target(str, Enum):
    """What `sirtjax segment` delineates."""

    liver = "liver"
    lesions = "lesions"


@app.command()
def segment(
    image: Annotated[Path, typer.Argument(help="CT or T1 MR image: NIfTI/MHA/NRRD file or DICOM series folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output (.nii.gz) on the image's grid: the liver 0/1, or lesions 1..n (one id per lesion).")],
    target: Annotated[Target, typer.Option("--target", help="liver, or lesions inside the liver.")] = Target.liver,
    model: Annotated[Optional[str], typer.Option("--model", help="Shipped model name or a model/run folder (default: the target's shipped model).")] = None,
    liver: Annotated[Optional[Path], typer.Option("--liver", help="--target lesions: the liver mask to search (default: segmented with --liver-model).")] = None,
    liver_model: Annotated[str, typer.Option("--liver-model", help="--target lesions without --liver: the liver model.")] = "liver",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="--target lesions: the probability from which a voxel is lesion (default 0.5; higher finds fewer lesions and fewer false positives).")] = None,
    min_cnr: Annotated[Optional[float], typer.Option("--min-cnr", help="--target lesions: the least integrated contrast-to-noise ratio of a lesion kept (default 5, Rose's criterion; 0 keeps all).")] = None,
    modality: Annotated[Optional[Modality], typer.Option("--modality", help="Default: guessed (air below -500 means CT; padding far below non-negative voxels, MR).", show_default=False)] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average predictions over the axis flips the model was trained with (slower; refused for a model trained without flips, as the shipped ones are).")] = False,
    probability: Annotated[Optional[Path], typer.Option("--probability", help="Also write the probability map here.")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="A contrast CT of the same patient whose liver mask (--reference-mask) the registration-segmentation network carries onto IMAGE, a non-contrast CT (default model: regseg).")] = None,
    reference_mask: Annotated[Optional[Path], typer.Option("--reference-mask", help="With --reference: its liver mask.")] = None,
    field: Annotated[Optional[Path], typer.Option("--field", help="With --reference: also write the displacement field (ITK convention, IMAGE's grid).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Segment the liver or the lesions inside it (one id each); with --reference, the liver of a non-contrast CT by
    registering the contrast CT and its mask onto it (paper 004)."""
    from sirtjax.segmentation.request import SegmentRequest, segment_image

    request = SegmentRequest(image, out, target.value, model, liver, liver_model, threshold, min_cnr,
                             modality and modality.value, tta, probability, reference, reference_mask, field, overwrite)
    with progress_bar() as bar:
        task = bar.add_task("segmenting", total=None)

        def on_guess(guessed: str, ct_problem: str | None) -> None:
            typer.echo(f"modality: {guessed} (guessed from the intensities; pass --modality to set it)")
            if ct_problem is not None:
                typer.echo(f"warning: {image.name}: read as MR; if it is a CT, it is {ct_problem}", err=True)

        result = segment_image(request, load_model=_model, find_liver=_liver, on_guess=on_guess, programs=program_cache(),
                               on_batch=lambda done, total: bar.update(task, completed=done, total=total))
    _say(result, request)


def _say(result: SegmentResult, request: SegmentRequest) -> None:
    """Print what `sirtjax segment` found: the liver's volume or each lesion, the warnings, the output."""
    for note in result.notes:
        typer.echo(note)
    if result.lesions is None:
        carried = "" if result.carried_by is None else f" (reference mask carried across by {result.carried_by})"
        typer.echo(f"liver: {result.liver_ml:.1f} ml{carried}")
    else:
        typer.echo(f"lesions: {len(result.lesions)} in the liver" + ("" if request.liver else " (liver segmented first)"))
    for les in result.lesions or ():
        typer.echo(f"  lesion {les.id}: {les.volume_ml:.2f} ml, {les.diameter_mm:.0f} mm across, confidence {les.confidence:.2f}, "
                   f"contrast-to-noise {'-' if les.cnr is None else f'{les.cnr:.0f}'}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"-> {request.out}")


def _model(name: str, target: str, modality: str, option: str, *, registration: bool = False):
    """(model, spec) of a shipped name or folder, checked for target and modality: segmentation.request.checked_model,
    looked up here at each call so that a test may replace the loading."""
    from sirtjax.segmentation.request import checked_model

    return checked_model(name, target, modality, option, registration=registration)


def _liver(net, spec: dict, vol, modality: str, predict: dict):
    """(liver mask, probability, warnings) of an image: segmentation.request.predict_liver, looked up here at each call
    so that a test may replace the inference."""
    from sirtjax.segmentation.request import predict_liver

    return predict_liver(net, spec, vol, modality, predict)

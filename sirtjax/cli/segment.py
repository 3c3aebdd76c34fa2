"""``sirtjax segment IMAGE -o MASK [--target lesions]``: liver or lesion segmentation with shipped or user-trained U-Nets."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sirtjax.cli._app import Modality, Overwrite, app, program_cache, progress_bar


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
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="--target lesions: the probability from which a voxel is lesion (default 0.5). Higher finds fewer lesions and fewer false positives (the lesion model card measures the trade).")] = None,
    min_cnr: Annotated[Optional[float], typer.Option("--min-cnr", help="--target lesions: keep a lesion only if the image shows it, its contrast-to-noise ratio against the liver around it, integrated over its voxels, at least this (default 5, Rose's criterion, as the training labels; 0 keeps all).")] = None,
    modality: Annotated[Optional[Modality], typer.Option("--modality", help="Default: guessed (air below -500 means CT; padding far below non-negative voxels, MR).", show_default=False)] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average predictions over the axis flips the model was trained with (slower; refused for a model trained without flips, as the shipped ones are).")] = False,
    probability: Annotated[Optional[Path], typer.Option("--probability", help="Also write the probability map here.")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="A contrast CT of the same patient whose liver mask (--reference-mask) the registration-segmentation network carries onto IMAGE, a non-contrast CT (default model: regseg).")] = None,
    reference_mask: Annotated[Optional[Path], typer.Option("--reference-mask", help="With --reference: its liver mask.")] = None,
    field: Annotated[Optional[Path], typer.Option("--field", help="With --reference: also write the displacement field (ITK convention, IMAGE's grid).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Segment the liver (3 mm grid, sliding-window U-Net, largest component) or the lesions inside it (one id each);
    with --reference, the liver of a non-contrast CT by registering the contrast CT and its mask onto it (paper 004)."""
    import numpy as np

    from sirtjax.errors import InputError
    from sirtjax.io import hounsfield_problem, read_volume, write_volume
    from sirtjax.segmentation.preprocess import body_problem, guess_modality

    modality = None if modality is None else modality.value
    if liver is not None and target is not Target.lesions:
        raise InputError("--liver", "is for --target lesions")
    if threshold is not None and target is not Target.lesions:
        raise InputError("--threshold", "is for --target lesions")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError("--threshold", f"must be a probability between 0 and 1 (exclusive), got {threshold}")
    if min_cnr is not None and target is not Target.lesions:
        raise InputError("--min-cnr", "is for --target lesions")
    if min_cnr is not None and not min_cnr >= 0.0:
        raise InputError("--min-cnr", f"must be a contrast-to-noise ratio >= 0, got {min_cnr}")
    if (reference is None) != (reference_mask is None):
        raise InputError("--reference" if reference is None else "--reference-mask", "--reference and --reference-mask go together")
    if reference is not None:
        if target is not Target.liver or probability is not None or tta:
            raise InputError("--reference", "segments the liver alone, without --probability or --tta")
        if modality not in (None, "ct"):
            raise InputError("--modality", "--reference registers a contrast CT onto a non-contrast CT: both are ct")
        return _by_reference(image, reference, reference_mask, out, model or "regseg", field, overwrite)
    if field is not None:
        raise InputError("--field", "is for --reference")
    inputs = (image,) if liver is None else (image, liver)
    for path in (out, probability) if probability is not None else (out,):
        _check_volume_output(path, overwrite, inputs)
    if probability is not None and probability.resolve() == out.resolve():
        raise InputError(probability, "--probability must differ from the mask output")
    vol = read_volume(image)
    liver_vol = None if liver is None else read_volume(liver)
    if modality is None:
        modality = guess_modality(vol.array)
        typer.echo(f"modality: {modality} (guessed from the intensities; pass --modality to set it)")
        if modality == "mr" and (problem := _stored_ct_problem(vol.array)) is not None:
            typer.echo(f"warning: {image.name}: read as MR; if it is a CT, it is {problem}", err=True)
    elif modality == "ct" and (problem := hounsfield_problem(vol.array)) is not None:
        raise InputError(image, problem)
    if (problem := body_problem(np.asarray(vol.array), modality)) is not None:
        raise InputError(image, problem)
    net, spec = _model(model or target.value, target.value, modality, "--model")
    liver_net = _model(liver_model, "liver", modality, "--liver-model") if target is Target.lesions and liver_vol is None else None
    if tta:
        _check_tta(((model or target.value, spec),) + (() if liver_net is None else ((liver_model, liver_net[1]),)))
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000.0
    with progress_bar() as bar:
        task = bar.add_task("segmenting", total=None)
        predict = {"tta": tta, "on_batch": lambda d, n: bar.update(task, completed=d, total=n), "programs": program_cache()}
        if liver_net is not None:
            liver_vol, _, _ = _liver(*liver_net, vol, modality, predict, voxel_ml)
        if target is Target.liver:
            mask, prob, lines = _liver(net, spec, vol, modality, predict, voxel_ml)
        else:
            given = {k: v for k, v in (("threshold", threshold), ("min_cnr", min_cnr)) if v is not None}
            mask, prob, lines = _lesions(net, spec, vol, liver_vol, modality, {**predict, **given}, liver)
    write_volume(mask, out, dtype=np.uint8 if target is Target.liver else np.uint16, overwrite=overwrite)
    if probability is not None:
        write_volume(prob, probability, dtype=np.float32, overwrite=overwrite)
    for line in lines:
        typer.echo(line, err=line.startswith("warning"))
    typer.echo(f"-> {out}")


def _check_tta(models: tuple[tuple[str, dict], ...]) -> None:
    """Refuse --tta for a model trained without mirrored patches: a flipped input puts the liver on the wrong side."""
    from sirtjax.errors import InputError
    from sirtjax.segmentation.infer import tta_flips

    for name, spec in models:
        if not tta_flips(spec):
            raise InputError("--tta", f"model {name} was trained without flips (no flip_axes in its model.json), so a mirrored input shows it anatomy it never saw")


def _by_reference(image: Path, reference: Path, reference_mask: Path, out: Path, model: str, field: Optional[Path], overwrite: bool) -> None:
    """`sirtjax segment IMAGE --reference CT --reference-mask MASK`: the registration-segmentation network."""
    import numpy as np

    from sirtjax.errors import InputError
    from sirtjax.io import read_volume, write_volume
    from sirtjax.segmentation.postprocess import liver_warnings
    from sirtjax.segmentation.regseg import segment_by_reference

    for path, scalar in ((out, True),) if field is None else ((out, True), (field, False)):
        _check_volume_output(path, overwrite, (image, reference, reference_mask), scalar=scalar)
    if field is not None and field.resolve() == out.resolve():
        raise InputError(field, "--field must differ from the mask output")
    net, spec = _model(model, "liver", "ct", "--model", registration=True)
    vol, ref, ref_mask = read_volume(image), read_volume(reference), read_volume(reference_mask)
    for path, v in ((image, vol), (reference, ref)):
        if np.asarray(v.array).ndim != 3 or float(np.min(v.array)) > -500:
            raise InputError(path, "expected a CT in Hounsfield units (a scalar 3D image with air below -500)")
    if not np.any(np.asarray(ref_mask.array) > 0):
        raise InputError(reference_mask, "the reference liver mask is empty")
    result = segment_by_reference(net, spec, vol, ref, ref_mask, programs=program_cache())
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000.0
    write_volume(result.mask, out, dtype=np.uint8, overwrite=overwrite)
    if field is not None:
        write_volume(result.displacement, field, dtype=np.float32)
    typer.echo(f"liver: {int(np.asarray(result.mask.array).sum()) * voxel_ml:.1f} ml (reference mask carried across by {model})")
    for w in liver_warnings(np.asarray(result.mask.array, np.float32), voxel_ml):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"-> {out}")


def _check_volume_output(path: Path, overwrite: bool, inputs: tuple[Path, ...], *, scalar: bool = True) -> None:
    """Refuse, before any computation, an output that exists (unless overwritten), clashes with an input, or names a
    format that the volume cannot be written in."""
    from sirtjax.errors import InputError
    from sirtjax.io import is_dicom_output, volume_output_problem
    from sirtjax.outputs import check_output

    if (problem := volume_output_problem(path, scalar=scalar)) is not None:
        raise InputError(path, problem)
    check_output(path, overwrite=overwrite, folder=is_dicom_output(path), inputs=inputs)


def _stored_ct_problem(array) -> str | None:
    """For an image guessed to be MR: why it may be a CT without its rescale intercept (the Hounsfield check, and the
    body's voxels, those above 500, centred at 950-1150 as soft tissue and fat are at +1024), or None."""
    import numpy as np

    from sirtjax.io import hounsfield_problem

    problem = hounsfield_problem(array)
    body = np.asarray(array)[::2, ::2, ::2]
    body = body[body > 500]
    return problem if problem is not None and body.size and 950.0 <= float(np.median(body)) <= 1150.0 else None


def _model(name: str, target: str, modality: str, option: str, *, registration: bool = False):
    """(model, spec) of a shipped name or folder, refused with one line when it cannot segment target on modality
    (or is a registration-segmentation network where a U-Net is wanted, or the reverse)."""
    from sirtjax.errors import InputError
    from sirtjax.models import load_model
    from sirtjax.models.store import spec_problem

    net, spec = load_model(name)
    problem = spec_problem(spec, target, modality, registration=registration)
    if problem is not None:
        raise InputError(option, f"model {name} {problem}")
    return net, spec


def _liver(net, spec, vol, modality, predict: dict, voxel_ml):
    """(liver mask, probability, report lines) of `sirtjax segment`; ``predict``: the inference's keyword arguments."""
    import numpy as np

    from sirtjax.segmentation import liver_mask, predict_probability
    from sirtjax.segmentation.postprocess import liver_warnings

    noise = []
    prob = predict_probability(net, spec, vol, modality=modality, on_noise=noise.append, **predict)
    mask = prob.with_array(liver_mask(np.asarray(prob.array)))
    lines = [m.describe() for m in noise if m.tv_weight is not None] + [f"liver: {int(mask.array.sum()) * voxel_ml:.1f} ml"]
    return mask, prob, lines + [f"warning: {w}" for w in liver_warnings(np.asarray(prob.array), voxel_ml)]


def _lesions(net, spec, vol, liver_vol, modality, predict: dict, liver_path):
    """(lesion instances, probability, report lines) of `sirtjax segment --target lesions`; `predict` holds
    segment_lesions' keywords (threshold, min_cnr, tta, ...)."""
    from sirtjax.errors import InputError
    from sirtjax.segmentation import segment_lesions

    try:
        seg = segment_lesions(net, spec, vol, liver_vol, modality=modality, **predict)
    except InputError as exc:
        raise InputError(liver_path or "liver", exc.problem) from None
    lines = [f"lesions: {len(seg.lesions)} in the liver" + ("" if liver_path else " (liver segmented first)")]
    lines += [f"  lesion {les.id}: {les.volume_ml:.2f} ml, {les.diameter_mm:.0f} mm across, confidence {les.confidence:.2f}, "
              f"contrast-to-noise {'-' if les.cnr is None else f'{les.cnr:.0f}'}" for les in seg.lesions]
    return seg.labels, seg.probability, lines

"""A segmentation asked for by file names, as ``sirtjax segment`` takes it: the rules its options follow, the models
checked for the image, and read → segment → write: the liver, the lesions inside it, or the liver of a non-contrast
CT carried across from a contrast CT by the registration-segmentation network (paper 004)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sirtjax.errors import InputError
from sirtjax.metrics import volume_ml
from sirtjax.io import hounsfield_problem, is_dicom_output, read_volume, volume_output_problem, write_volume
from sirtjax.outputs import check_output
from sirtjax.programs import ProgramCache
from sirtjax.segmentation.noise import NoiseMatch
from sirtjax.segmentation.postprocess import liver_mask, liver_warnings
from sirtjax.segmentation.preprocess import body_problem, guess_modality
from sirtjax.volume import Volume

if TYPE_CHECKING:  # the inference and lesion modules import Flax: imported where they run (segmentation/__init__.py)
    from sirtjax.segmentation.lesions import Lesion

ModelLoader = Callable[..., tuple[Any, dict]]
"""(name, target, modality, option, *, registration=False) -> (model, spec), as :func:`checked_model`."""
LiverPredictor = Callable[..., tuple[Volume, Volume, list[str]]]
"""(model, spec, image, modality, predict keywords) -> (mask, probability, warnings), as :func:`predict_liver`."""


@dataclasses.dataclass(frozen=True)
class SegmentRequest:
    """``sirtjax segment``'s inputs: the image, the output, the target (liver or lesions) and the options, None or
    empty where not given (docs/segment.md)."""

    image: Path
    out: Path
    target: str = "liver"
    model: str | None = None
    liver: Path | None = None
    liver_model: str = "liver"
    threshold: float | None = None
    min_cnr: float | None = None
    modality: str | None = None
    tta: bool = False
    probability: Path | None = None
    reference: Path | None = None
    reference_mask: Path | None = None
    field: Path | None = None
    overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment_image` wrote: the liver's volume (ml; None for lesions), the lesions (None for the liver),
    the network that carried a reference mask across (None without --reference), how the input was denoised, and the
    plausibility warnings."""

    liver_ml: float | None
    lesions: tuple[Lesion, ...] | None
    carried_by: str | None
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def check_segment_request(request: SegmentRequest) -> None:
    """Refuse options that do not go together or are out of range; :class:`InputError` naming the option."""
    if request.target != "lesions":
        for option, value in (("--liver", request.liver), ("--threshold", request.threshold), ("--min-cnr", request.min_cnr)):
            if value is not None:
                raise InputError(option, "is for --target lesions")
    if request.threshold is not None and not 0.0 < request.threshold < 1.0:
        raise InputError("--threshold", f"must be a probability between 0 and 1 (exclusive), got {request.threshold}")
    if request.min_cnr is not None and not request.min_cnr >= 0.0:
        raise InputError("--min-cnr", f"must be a contrast-to-noise ratio >= 0, got {request.min_cnr}")
    if (request.reference is None) != (request.reference_mask is None):
        raise InputError("--reference" if request.reference is None else "--reference-mask",
                         "--reference and --reference-mask go together")
    if request.reference is None:
        if request.field is not None:
            raise InputError("--field", "is for --reference")
        return
    if request.target != "liver" or request.probability is not None or request.tta:
        raise InputError("--reference", "segments the liver alone, without --probability or --tta")
    if request.modality not in (None, "ct"):
        raise InputError("--modality", "--reference registers a contrast CT onto a non-contrast CT: both are ct")


def checked_model(name: str, target: str, modality: str, option: str, *, registration: bool = False) -> tuple[Any, dict]:
    """(model, spec) of a shipped name or folder; :class:`InputError` naming ``option`` when it cannot segment
    ``target`` on ``modality`` (or is a registration-segmentation network where a U-Net is wanted, or the reverse)."""
    from sirtjax.models import load_model
    from sirtjax.models.store import spec_problem

    net, spec = load_model(name)
    if (problem := spec_problem(spec, target, modality, registration=registration)) is not None:
        raise InputError(option, f"model {name} {problem}")
    return net, spec


def predict_liver(net, spec: dict, vol: Volume, modality: str, predict: dict) -> tuple[Volume, Volume, list[str]]:
    """The liver mask (0/1), its probability and the plausibility warnings of ``vol``; ``predict``: the keywords of
    :func:`~sirtjax.segmentation.infer.predict_probability` (tta, on_batch, on_noise, programs, ...)."""
    from sirtjax.segmentation.infer import predict_probability

    prob = predict_probability(net, spec, vol, modality=modality, **predict)
    mask = prob.with_array(liver_mask(np.asarray(prob.array)))
    return mask, prob, liver_warnings(np.asarray(prob.array), _voxel_ml(vol))


def _voxel_ml(vol: Volume) -> float:
    """The volume of one voxel of ``vol`` in ml."""
    return float(np.prod(vol.spacing_mm)) / 1000.0


def segment_image(request: SegmentRequest, *, load_model: ModelLoader = checked_model,
                  find_liver: LiverPredictor = predict_liver, on_guess: Callable[[str, str | None], None] | None = None,
                  on_batch: Callable[[int, int], None] | None = None, programs: ProgramCache | None = None) -> SegmentResult:
    """Check, read, segment and write ``request`` as ``sirtjax segment`` does; ``on_guess(modality, problem)`` hears a
    guessed modality (``problem``: why an image guessed MR may be a CT without its intercept) before any model loads;
    ``programs``: the compiled programs' cache."""
    check_segment_request(request)
    if request.reference is not None:
        return _by_reference(request, load_model, programs)
    vol, liver_vol, modality = _read_image(request, on_guess)
    lesions = request.target == "lesions"
    name = request.model or request.target
    net, spec = load_model(name, request.target, modality, "--model")
    liver_net = load_model(request.liver_model, "liver", modality, "--liver-model") if lesions and liver_vol is None else None
    if request.tta:
        _check_tta([(name, spec)] + ([] if liver_net is None else [(request.liver_model, liver_net[1])]))
    predict = {"tta": request.tta, "on_batch": on_batch, "programs": programs}
    if liver_net is not None:
        liver_vol, _, _ = find_liver(*liver_net, vol, modality, predict)
    if lesions:
        mask, prob, result = _lesions(net, spec, vol, liver_vol, modality, predict, request)
    else:
        noise: list[NoiseMatch] = []
        mask, prob, warnings = find_liver(net, spec, vol, modality, {**predict, "on_noise": noise.append})
        notes = tuple(m.describe() for m in noise if m.tv_weight is not None)
        result = SegmentResult(volume_ml(mask), None, None, notes, tuple(warnings))
    write_volume(mask, request.out, dtype=np.uint16 if lesions else np.uint8, overwrite=request.overwrite)
    if request.probability is not None:
        write_volume(prob, request.probability, dtype=np.float32, overwrite=request.overwrite)
    return result


def _read_image(request: SegmentRequest, on_guess: Callable[[str, str | None], None] | None) -> tuple[Volume, Volume | None, str]:
    """(image, given liver or None, modality) of a request without a reference, its outputs checked first; the
    modality guessed when not given (``on_guess`` hears it), the image refused when it is no CT or holds no body."""
    inputs = (request.image,) if request.liver is None else (request.image, request.liver)
    _check_outputs([(request.out, True)] + ([] if request.probability is None else [(request.probability, True)]),
                   request.overwrite, inputs)
    if request.probability is not None and request.probability.resolve() == request.out.resolve():
        raise InputError(request.probability, "--probability must differ from the mask output")
    vol = read_volume(request.image)
    liver_vol = None if request.liver is None else read_volume(request.liver)
    modality = request.modality
    if modality is None:
        modality = guess_modality(vol.array)
        if on_guess is not None:
            on_guess(modality, _stored_ct_problem(vol.array) if modality == "mr" else None)
    elif modality == "ct" and (problem := hounsfield_problem(vol.array)) is not None:
        raise InputError(request.image, problem)
    if (problem := body_problem(np.asarray(vol.array), modality)) is not None:
        raise InputError(request.image, problem)
    return vol, liver_vol, modality


def _check_outputs(outputs: list[tuple[Path, bool]], overwrite: bool, inputs: tuple[Path, ...]) -> None:
    """Refuse, before any computation, an output (path, scalar) that exists (unless overwritten), clashes with an input,
    or names a format that the volume cannot be written in."""
    for path, scalar in outputs:
        if (problem := volume_output_problem(path, scalar=scalar)) is not None:
            raise InputError(path, problem)
        check_output(path, overwrite=overwrite, folder=is_dicom_output(path), inputs=inputs)


def _check_tta(models: list[tuple[str, dict]]) -> None:
    """Refuse --tta for a model trained without mirrored patches: a flipped input puts the liver on the wrong side."""
    from sirtjax.segmentation.infer import tta_flips

    for name, spec in models:
        if not tta_flips(spec):
            raise InputError("--tta", f"model {name} was trained without flips (no flip_axes in its model.json), so a mirrored input shows it anatomy it never saw")


def _stored_ct_problem(array) -> str | None:
    """For an image guessed to be MR: why it may be a CT without its rescale intercept (the Hounsfield check, and the
    body's voxels, those above 500, centred at 950-1150 as soft tissue and fat are at +1024), or None."""
    problem = hounsfield_problem(array)
    body = np.asarray(array)[::2, ::2, ::2]
    body = body[body > 500]
    return problem if problem is not None and body.size and 950.0 <= float(np.median(body)) <= 1150.0 else None


def _lesions(net, spec: dict, vol: Volume, liver_vol: Volume, modality: str, predict: dict,
             request: SegmentRequest) -> tuple[Volume, Volume, SegmentResult]:
    """(lesion instances, probability, result) of ``--target lesions``: the request's threshold and min_cnr given to
    :func:`segment_lesions`, whose complaint about the liver names the --liver file."""
    from sirtjax.segmentation.lesions import segment_lesions

    given = {k: v for k, v in (("threshold", request.threshold), ("min_cnr", request.min_cnr)) if v is not None}
    try:
        seg = segment_lesions(net, spec, vol, liver_vol, modality=modality, **predict, **given)
    except InputError as exc:
        raise InputError(request.liver or "liver", exc.problem) from None
    return seg.labels, seg.probability, SegmentResult(None, seg.lesions, None, (), ())


def _by_reference(request: SegmentRequest, load_model: ModelLoader, programs: ProgramCache | None) -> SegmentResult:
    """``--reference CT --reference-mask MASK``: the registration-segmentation network carries the mask onto the image.

    The network is built and its weights read in a thread while the images are read and pre-aligned (building it is
    Python tracing, about 0.5 s; the pre-alignment mostly waits on XLA)."""
    from sirtjax.segmentation.regseg import carry_references, prealign

    name = request.model or "regseg"
    inputs = (request.image, request.reference, request.reference_mask)
    _check_outputs([(request.out, True)] + ([] if request.field is None else [(request.field, False)]),
                   request.overwrite, inputs)
    if request.field is not None and request.field.resolve() == request.out.resolve():
        raise InputError(request.field, "--field must differ from the mask output")
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_model, name, "liver", "ct", "--model", registration=True)
        vol, ref, ref_mask = (read_volume(p) for p in inputs)
        for path, v in ((request.image, vol), (request.reference, ref)):
            if np.asarray(v.array).ndim != 3 or float(np.min(v.array)) > -500:
                raise InputError(path, "expected a CT in Hounsfield units (a scalar 3D image with air below -500)")
        if not np.any(np.asarray(ref_mask.array) > 0):
            raise InputError(request.reference_mask, "the reference liver mask is empty")
        affines = prealign([(vol, ref)], programs)
        net, spec = loading.result()  # a model that cannot be loaded stops the command here, before any output
    result = carry_references(net, spec, [(vol, ref, ref_mask)], affines, programs)[0]
    write_volume(result.mask, request.out, dtype=np.uint8, overwrite=request.overwrite)
    if request.field is not None:
        write_volume(result.displacement, request.field, dtype=np.float32)
    warnings = liver_warnings(np.asarray(result.mask.array, np.float32), _voxel_ml(vol))
    return SegmentResult(volume_ml(result.mask), None, name, (), tuple(warnings))

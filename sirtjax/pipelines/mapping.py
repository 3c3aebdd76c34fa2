"""Liver and lesion VOIs of a session's anatomical image: given, segmented, or mapped by registration.

Thesis ch. 8: the liver is taken on the session's own CT/MR (given, or segmented there, which
avoids registration error); lesions drawn or segmented on a diagnostic CT/MR are mapped onto it
by registering the diagnostic image to the session image (diagnostic -> MAA CT for planning,
diagnostic -> 90Y CT/MR for verification). The preset follows the guidance available:
CNN&LM-guided when both images have label maps sharing landmark ids (>= 2), CNN-guided when both
have liver masks, image-based otherwise. With landmarks, the liver class of each label map is the
liver VOI in use (given or segmented), so a segmented liver guides the registration as in the
thesis. Label maps are warped by nearest neighbour. When the study gives no lesions anywhere, a
lesion model finds them (thesis ch. 7): on the first diagnostic image, whose contrast shows them
best, then mapped like drawn ones; without a diagnostic image, on the session image itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from sirtjax import keys
from sirtjax.errors import SirtjaxError
from sirtjax.metrics import JacobianStats, dice, mcd
from sirtjax.plausibility import PLAUSIBLE_LIVER_ML, ResultWarning
from sirtjax.programs import ProgramCache
from sirtjax.pipelines.inputs import Anatomy, WorkflowOptions
from sirtjax.registration import RegistrationResult, guided
from sirtjax.registration.warp import warp_volume
from sirtjax.volume import Volume


@dataclasses.dataclass(frozen=True)
class RegistrationChecks:
    """How a registration onto a session image went: its preset and guidance, liver Dice and Jacobian statistics."""

    source: str
    target: str
    preset: str
    landmarks: tuple[int, ...]  # the landmark ids that guided it (cnn-lm-guided), else ()
    liver_dice: float | None  # the warped source liver against the target liver; None without a source liver
    jacobian: JacobianStats  # det J over the whole grid (Python numbers)
    jacobian_liver: JacobianStats  # det J over the target liver
    stages: tuple[dict, ...]  # the registration's per-stage diagnostics (RegistrationResult.diagnostics["stages"])

    def to_json(self) -> dict:
        """The checks as report.json holds them."""
        return {"source": self.source, "target": self.target, "preset": self.preset, "landmarks": list(self.landmarks),
                "liver_dice": self.liver_dice, "jacobian": self.jacobian.to_dict(),
                "jacobian_liver": self.jacobian_liver.to_dict(), "stages": list(self.stages)}


@dataclasses.dataclass(frozen=True)
class Registered:
    """A diagnostic image registered onto a session image, with its VOIs warped onto the session grid."""

    source: str
    target: str
    preset: str
    result: RegistrationResult
    liver: Volume | None  # the source liver on the target grid (0/1), when the source has one
    lesions: Volume | None  # the source lesion instances on the target grid
    checks: RegistrationChecks  # report.json holds its to_json()
    warnings: tuple[ResultWarning, ...] = ()  # implausible results (folding of the target liver)


@dataclasses.dataclass(frozen=True)
class SessionLesions:
    """A session's lesion instances on its grid (None: none), their source, the registrations done, and,
    when a lesion model found them, each lesion as found (JSON-ready: image, id, volume, confidence)."""

    lesions: Volume | None
    source: str
    registrations: list[Registered]
    found: list[dict] = dataclasses.field(default_factory=list)


def liver_of(anatomy: Anatomy, options: WorkflowOptions, references: Sequence[Anatomy] = ()) -> tuple[Volume, str]:
    """The liver mask (0/1, the image's grid) of an anatomical image and its source: 'given', carried from a reference
    (``options.reference_segmenter``: a CT without a mask, from the first CT of ``references`` with a given liver), or
    'segmented'.

    Raises ValueError when neither a mask nor a segmenter is available, or the result is empty; and when a liver
    that was not given (segmented or carried) lies outside PLAUSIBLE_LIVER_ML, unless
    ``options.accept_implausible_liver`` (a plan on a wrong liver is a wrong prescription; a given mask is the user's).
    """
    reference = next((r for r in references if r.modality == "CT" and r.liver is not None), None)
    try:
        if anatomy.liver is not None:
            mask, source = anatomy.liver, "given"
        elif options.reference_segmenter is not None and anatomy.modality == "CT" and reference is not None:
            mask = options.reference_segmenter(anatomy.image, reference.image, reference.liver)
            source = f"carried from the given liver of {reference.name} by the registration-segmentation network"
        elif options.segmenter is not None:
            mask, source = options.segmenter(anatomy.image, anatomy.modality), "segmented"
        else:
            raise ValueError(f"{anatomy.name}: no liver mask given and no liver segmentation model available")
    except SirtjaxError as exc:  # e.g. the liver model is not installed
        raise ValueError(f"{anatomy.name}: no liver mask given, and segmenting it failed ({exc})") from None
    array = np.asarray(mask.array) != 0
    if not np.any(array):
        raise ValueError(f"{anatomy.name}: the {source} liver mask is empty")
    volume_ml = float(np.count_nonzero(array)) * float(np.prod(np.asarray(mask.spacing_mm))) / 1000.0
    lo, hi = PLAUSIBLE_LIVER_ML
    if source != "given" and not options.accept_implausible_liver and not lo <= volume_ml <= hi:
        raise ValueError(f"{anatomy.name}: the {source} liver is {volume_ml:.0f} ml, outside {lo:.0f}-{hi:.0f} ml: check the image "
                         "and its modality, or give its liver mask; --accept-implausible goes on with it")
    return mask.with_array(array.astype(np.uint8)), source


def shared_landmarks(a: Volume | None, b: Volume | None) -> list[int]:
    """Landmark ids (>= 2) present in both label maps; [] when either is None."""
    if a is None or b is None:
        return []
    return sorted((set(np.unique(np.asarray(a.array)).tolist()) & set(np.unique(np.asarray(b.array)).tolist())) - {0, 1})


def landmark_labels(labels: Volume, liver: Volume | None) -> Volume:
    """The label map for CNN&LM guidance: its landmarks (ids >= 2) over the liver VOI in use (1), else its own liver."""
    a = np.asarray(labels.array)
    base = (a == 1) if liver is None else (np.asarray(liver.array) != 0)
    return labels.with_array(np.where(a >= 2, a, base.astype(a.dtype)))


def without_landmarks(anatomy: Anatomy, ids: Sequence[int]) -> Anatomy:
    """The anatomy with the landmarks ``ids`` removed from its label map (their voxels 0: the liver VOI then covers them
    in the guidance, as :func:`landmark_labels` fills it)."""
    if not ids:
        return anatomy
    a = np.asarray(anatomy.labels.array)
    return dataclasses.replace(anatomy, labels=anatomy.labels.with_array(np.where(np.isin(a, list(ids)), 0, a).astype(a.dtype)))


def landmark_error_mm(target_labels: Volume, source_labels: Volume, field: Volume, ids: Sequence[int],
                      programs: ProgramCache | None = None) -> float:
    """Mean mass-centre distance (mm) between the target's landmarks ``ids`` and the source's, warped onto the target
    by ``field`` (nearest neighbour; ``programs``: where the warp is kept compiled); a landmark warped out of the
    target's grid counts as infinitely far."""
    warped = np.asarray(warp_volume(source_labels, field, order=0, programs=programs).array)
    target = np.asarray(target_labels.array)
    return float(np.mean([mcd(target_labels.with_array(target == i), target_labels.with_array(warped == i)) for i in ids]))


def choose_preset(target: Anatomy, source: Anatomy, target_liver: Volume | None, source_liver: Volume | None) -> str:
    """'cnn-lm-guided' (shared landmark labels), 'cnn-guided' (liver masks on both) or 'image-based'
    (:func:`sirtjax.registration.guided.choose_preset`)."""
    return guided.choose_preset(masks=target_liver is not None and source_liver is not None,
                                labels=bool(shared_landmarks(target.labels, source.labels)))


def register_anatomy(target: Anatomy, source: Anatomy, *, target_liver: Volume, options: WorkflowOptions,
                     key: jax.Array, progress=None) -> Registered:
    """Register source (a diagnostic CT/MR) onto target and warp the source's liver and lesions onto it.

    target_liver: the target's liver mask (0/1, target grid). The source liver is the given mask or,
    with a segmenter, a segmentation; without either the CNN-guided preset is not available.
    """
    source_liver = None
    if source.liver is not None or options.segmenter is not None:
        source_liver, _ = liver_of(source, options)
    preset = choose_preset(target, source, target_liver, source_liver)
    guidance = guided.Guidance(fixed_mask=target_liver, moving_mask=source_liver)
    if preset == "cnn-lm-guided":
        guidance = dataclasses.replace(guidance, fixed_labels=landmark_labels(target.labels, target_liver),
                                       moving_labels=landmark_labels(source.labels, source_liver))
    checked = guided.register_checked(
        target.image, source.image, guidance, preset=preset, overrides=options.registration, key=key,
        progress=progress, liver_name=f"the {target.name} liver ({source.name} to {target.name} registration)",
        programs=options.programs)
    result = checked.result
    field = result.displacement
    liver = None if source_liver is None else warp_volume(source_liver, field, order=0, programs=options.programs)
    lesions = None if source.lesions is None else warp_volume(source.lesions, field, order=0, programs=options.programs)
    target_mask = np.asarray(target_liver.array) != 0
    checks = RegistrationChecks(
        source.name, target.name, preset,
        landmarks=tuple(shared_landmarks(target.labels, source.labels)) if preset == "cnn-lm-guided" else (),
        liver_dice=None if liver is None else float(dice(np.asarray(liver.array) != 0, target_mask)),
        jacobian=JacobianStats(**checked.jacobian),
        jacobian_liver=JacobianStats(**checked.jacobian_liver),  # target_liver guided it: never None
        stages=tuple(result.diagnostics["stages"]))
    return Registered(source.name, target.name, preset, result, liver, lesions, checks, checked.warnings)


def lesions_of(target: Anatomy, diagnostics: Sequence[Anatomy], *, target_liver: Volume, options: WorkflowOptions,
               key: jax.Array, progress=None) -> SessionLesions:
    """Lesion instances on the target grid, how they were obtained, and the registrations done.

    Order of preference: lesions given on the target image itself (no registration); else the
    lesions of the first diagnostic image that has them, mapped by registration (every diagnostic
    image with lesions is registered, for the report's checks); else, with a lesion segmenter,
    lesions it finds (:func:`segmented_lesions`); else None ('none').
    """
    if target.lesions is not None:
        return SessionLesions(target.lesions, f"given on {target.name}", [])
    with_lesions = [d for d in diagnostics if d.lesions is not None]
    done = []
    for d in with_lesions:
        key, sub = keys.split(key, options.programs)
        done.append(register_anatomy(target, d, target_liver=target_liver, options=options, key=sub, progress=progress))
    if done:
        first = done[0]
        return SessionLesions(first.lesions, f"mapped from {first.source} ({first.preset} registration)", done)
    if options.lesion_segmenter is not None:
        return segmented_lesions(target, diagnostics, target_liver=target_liver, options=options, key=key, progress=progress)
    return SessionLesions(None, "none", [])


def segmented_lesions(target: Anatomy, diagnostics: Sequence[Anatomy], *, target_liver: Volume, options: WorkflowOptions,
                      key: jax.Array, progress=None) -> SessionLesions:
    """Lesions found by options.lesion_segmenter on the first diagnostic image (in its liver, given or
    segmented) and mapped by registration, or on the target image in target_liver when there is none."""
    image = diagnostics[0] if diagnostics else target
    liver = target_liver if image is target else liver_of(image, options)[0]
    try:
        seg = options.lesion_segmenter(image.image, image.modality, liver)
    except SirtjaxError as exc:  # e.g. the lesion model is not installed
        raise ValueError(f"{image.name}: no lesions given, and segmenting them failed ({exc})") from None
    found = [{"image": image.name, **les.to_json()} for les in seg.lesions]
    how = f"segmented on {image.name} by the lesion model ({len(found)} found)"
    if not found:
        return SessionLesions(None, how, [], found)
    if image is target:
        return SessionLesions(seg.labels, how, [], found)
    mapped = register_anatomy(target, dataclasses.replace(image, liver=liver, lesions=seg.labels), target_liver=target_liver,
                              options=options, key=key, progress=progress)
    return SessionLesions(mapped.lesions, f"{how}, mapped by {mapped.preset} registration", [mapped], found)

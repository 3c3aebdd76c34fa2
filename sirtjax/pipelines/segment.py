"""Liver and lesion segmentation for the workflows: segmenters backed by trained models (shipped name or folder).

A model is loaded on first use, so a study whose masks are all given never needs it; a missing or
unreadable model raises :class:`~sirtjax.errors.InputError` at that point (never a silent
fallback). Inference and post-processing are :func:`sirtjax.segmentation.segment_liver`
(canonical grid, windowing, sliding-window U-Net, largest component, holes filled) and
:func:`sirtjax.segmentation.segment_lesions` (inside the liver, one id per lesion).
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

from sirtjax.pipelines.inputs import LesionSegmenter, ReferenceSegmenter, Segmenter
from sirtjax.volume import Volume

DEFAULT_LIVER_MODEL = "liver"
DEFAULT_LESION_MODEL = "lesions"


def model_available(name_or_path: str | Path = DEFAULT_LIVER_MODEL) -> bool:
    """True when the model folder (model.json + weights.npz) exists; nothing is loaded."""
    from sirtjax.errors import InputError
    from sirtjax.models.store import resolve_model_dir

    try:
        resolve_model_dir(name_or_path)
    except InputError:
        return False
    return True


def _lazy_model(name_or_path: str | Path, target: str, *, registration: bool = False):
    """A function modality -> (model, spec) loading the model on first call and checking its target and modality
    (:func:`~sirtjax.models.store.spec_problem`)."""
    loaded: list = []

    def get(modality: str) -> tuple[Any, dict]:
        from sirtjax.models import load_model
        from sirtjax.models.store import spec_problem

        if not loaded:
            loaded.append(load_model(name_or_path))
        model, spec = loaded[0]
        problem = spec_problem(spec, target, modality, registration=registration)
        if problem is not None:
            raise ValueError(f"the {target} model {name_or_path} {problem}")
        return model, spec

    return get


def model_segmenter(name_or_path: str | Path = DEFAULT_LIVER_MODEL, programs=None) -> Segmenter:
    """A Segmenter (image Volume, modality 'CT' | 'MR') -> 0/1 liver mask on the image's grid, from a model
    (``programs``: the ProgramCache that keeps its compiled forward pass)."""
    get = _lazy_model(name_or_path, "liver")

    def segment(image: Volume, modality: str) -> Volume:
        from sirtjax.segmentation import segment_liver

        model, spec = get(modality)
        return segment_liver(model, spec, image, modality=modality.lower(), programs=programs)

    return segment


def model_reference_segmenter(name_or_path: str | Path = "regseg", programs=None) -> ReferenceSegmenter:
    """A ReferenceSegmenter (non-contrast CT, contrast CT, its liver) -> 0/1 liver mask, from a registration-segmentation
    network (:func:`sirtjax.segmentation.regseg.segment_by_reference`; ``programs``: the pre-alignment's ProgramCache)."""
    get = _lazy_model(name_or_path, "liver", registration=True)

    def segment(image: Volume, reference: Volume, reference_liver: Volume) -> Volume:
        from sirtjax.segmentation.regseg import segment_by_reference

        model, spec = get("ct")
        return segment_by_reference(model, spec, image, reference, reference_liver, programs=programs).mask

    return segment


def model_lesion_segmenter(name_or_path: str | Path = DEFAULT_LESION_MODEL, programs=None) -> LesionSegmenter:
    """A LesionSegmenter (image, modality, 0/1 liver mask on the image's grid) -> LesionSegmentation, from a model
    (``programs``: the ProgramCache that keeps its compiled forward pass)."""
    get = _lazy_model(name_or_path, "lesions")

    def segment(image: Volume, modality: str, liver: Volume):
        from sirtjax.segmentation import segment_lesions

        model, spec = get(modality)
        return segment_lesions(model, spec, image, liver, modality=modality.lower(), programs=programs)

    return segment


def workflow_options(*, quick: bool = False, liver_model: str | None = DEFAULT_LIVER_MODEL,
                     lesion_model: str = DEFAULT_LESION_MODEL, regseg_model: str = "none", programs=None, **settings: Any):
    """The workflows' :class:`~sirtjax.pipelines.inputs.WorkflowOptions` as the command line chooses them, in one place
    for ``plan``, ``verify``, ``demo`` and a cohort's plan task: the quick registration or the preset's own, the liver,
    lesion and registration-segmentation models by name ('none', or None for the liver: without), their compiled
    programs in ``programs``, and every other setting as given."""
    from sirtjax.pipelines.inputs import QUICK_REGISTRATION, WorkflowOptions
    from sirtjax.registration.config import Overrides

    return WorkflowOptions(
        registration=QUICK_REGISTRATION if quick else Overrides(),
        segmenter=None if liver_model is None else model_segmenter(liver_model, programs),
        reference_segmenter=None if regseg_model == "none" else model_reference_segmenter(regseg_model, programs),
        lesion_segmenter=None if lesion_model == "none" else model_lesion_segmenter(lesion_model, programs),
        programs=programs, **settings)

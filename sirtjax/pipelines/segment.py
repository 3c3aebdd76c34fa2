"""Liver segmentation for the workflows: a Segmenter backed by a trained model (shipped name or folder).

The model is loaded on first use, so a study whose liver masks are all given never needs it; a
missing or unreadable model raises :class:`~sirtjax.errors.InputError` at that point (never a
silent fallback). Inference and post-processing are :func:`sirtjax.segmentation.segment_liver`
(canonical grid, windowing, sliding-window U-Net, largest component, holes filled).
"""

from __future__ import annotations

from pathlib import Path

from sirtjax.pipelines.inputs import Segmenter
from sirtjax.volume import Volume

DEFAULT_LIVER_MODEL = "liver"


def model_available(name_or_path: str | Path = DEFAULT_LIVER_MODEL) -> bool:
    """True when the model folder (model.json + weights.npz) exists; nothing is loaded."""
    from sirtjax.errors import InputError
    from sirtjax.models.store import resolve_model_dir

    try:
        resolve_model_dir(name_or_path)
    except InputError:
        return False
    return True


def model_segmenter(name_or_path: str | Path = DEFAULT_LIVER_MODEL) -> Segmenter:
    """A Segmenter (image Volume, modality 'CT' | 'MR') -> 0/1 liver mask on the image's grid, from a model."""
    loaded: list = []  # the (model, spec) pair, filled on first use

    def segment(image: Volume, modality: str) -> Volume:
        from sirtjax.models import load_model
        from sirtjax.segmentation import segment_liver

        if not loaded:
            loaded.append(load_model(name_or_path))
        model, spec = loaded[0]
        kind = modality.lower()
        if kind not in spec.get("modalities", (kind,)):
            raise ValueError(f"the liver model {name_or_path} was trained for {spec.get('modalities')}, not {kind}")
        return segment_liver(model, spec, image, modality=kind)

    return segment

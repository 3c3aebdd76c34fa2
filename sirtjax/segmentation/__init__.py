"""Segmentation: input preparation, sliding-window inference and post-processing (thesis 4.3.2, 7.3.2).

The names of the modules that need Flax (inference, lesions) are imported when first used (PEP 562), so that a
command that does not run a U-Net (``segment --reference`` reads and pre-aligns while a thread imports Flax and
builds its network) does not wait for Flax's import.
"""

import importlib

from sirtjax.segmentation.postprocess import fill_holes, instance_labels, largest_component, liver_mask
from sirtjax.segmentation.preprocess import antialias, canonical_grid, lesion_input, mask_to_liver, normalize_intensity, prepare_image, prepare_label
from sirtjax.segmentation.sliding_window import gaussian_weights, sliding_window, tile_starts

_LAZY = {name: module for module, names in (
    ("infer", ("predict_array", "predict_probability", "probability_on", "segment_liver")),
    ("lesions", ("Lesion", "LesionSegmentation", "segment_lesions"))) for name in names}

__all__ = [
    "antialias",
    "canonical_grid",
    "fill_holes",
    "gaussian_weights",
    "instance_labels",
    "largest_component",
    "Lesion",
    "LesionSegmentation",
    "lesion_input",
    "liver_mask",
    "mask_to_liver",
    "normalize_intensity",
    "predict_array",
    "predict_probability",
    "probability_on",
    "prepare_image",
    "prepare_label",
    "segment_lesions",
    "segment_liver",
    "sliding_window",
    "tile_starts",
]


def __getattr__(name: str):
    """A name of the inference or lesion module, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

"""Segmentation: input preparation, sliding-window inference and post-processing (thesis 4.3.2, 7.3.2)."""

from sirtjax.segmentation.infer import predict_array, predict_probability, probability_on, segment_liver
from sirtjax.segmentation.lesions import Lesion, LesionSegmentation, segment_lesions
from sirtjax.segmentation.postprocess import fill_holes, instance_labels, largest_component, liver_mask
from sirtjax.segmentation.preprocess import antialias, canonical_grid, lesion_input, mask_to_liver, normalize_intensity, prepare_image, prepare_label
from sirtjax.segmentation.sliding_window import gaussian_weights, sliding_window, tile_starts

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

"""Lesion segmentation inside a liver mask (thesis 7.3.2.2): one instance id per lesion, with its confidence.

The lesion model sees the image on its canonical grid (2 mm for the shipped one), kept within
LIVER_MARGIN_MM of the liver and cropped to that box (`lesion_input`). Its probability map is
resampled trilinearly onto the image grid and kept inside the liver mask; lesions are the
6-connected components above the threshold of at least `min_ml`, numbered 1..n by decreasing
volume. A lesion's confidence is its mean probability; its diameter is that of the sphere of its
volume. Approximate: touching lesions that the network does not separate are one instance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import nnx
from scipy import ndimage

from sirtjax.preprocess import resample_to
from sirtjax.segmentation.infer import probability_on
from sirtjax.segmentation.postprocess import instance_labels
from sirtjax.segmentation.preprocess import lesion_input
from sirtjax.volume import Volume, same_grid

MIN_LESION_ML = 0.03  # about a 4 mm sphere: smaller components are not reported as lesions


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One segmented lesion: its id in the label map, volume (ml), equivalent diameter (mm), mean and peak probability."""

    id: int
    volume_ml: float
    diameter_mm: float
    confidence: float
    peak_probability: float

    def to_json(self) -> dict[str, float]:
        """The lesion as JSON values (rounded)."""
        return {"id": self.id, "volume_ml": round(self.volume_ml, 3), "diameter_mm": round(self.diameter_mm, 1),
                "confidence": round(self.confidence, 3), "peak_probability": round(self.peak_probability, 3)}


@dataclasses.dataclass(frozen=True)
class LesionSegmentation:
    """Lesion instances (int32, 0 background) and probability (float32) on the image grid, and each lesion."""

    labels: Volume
    probability: Volume
    lesions: tuple[Lesion, ...]


def describe_lesions(labels: np.ndarray, probability: np.ndarray, voxel_ml: float) -> tuple[Lesion, ...]:
    """A Lesion per id > 0 of an instance map, its confidence the mean of `probability` over it."""
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if not ids:
        return ()
    counts = ndimage.sum_labels(np.ones(labels.shape), labels, ids)
    means = ndimage.mean(probability, labels, ids)
    peaks = ndimage.maximum(probability, labels, ids)
    out = []
    for i, n, m, p in zip(ids, counts, means, peaks):
        ml = float(n) * voxel_ml
        out.append(Lesion(i, ml, float((6.0 * ml * 1000.0 / np.pi) ** (1.0 / 3.0)), float(m), float(p)))
    return tuple(out)


def segment_lesions(
    model: nnx.Module,
    spec: dict[str, Any],
    vol: Volume,
    liver: Volume,
    *,
    modality: str,
    threshold: float = 0.5,
    min_ml: float = MIN_LESION_ML,
    **predict_kwargs: Any,
) -> LesionSegmentation:
    """Lesions of `vol` inside the 0/1 `liver` mask (any grid) with a lesion model (see the module docstring).

    `predict_kwargs` (tta, batch_size, on_batch) go to :func:`~sirtjax.segmentation.infer.probability_on`.
    """
    if spec.get("target") != "lesions":
        raise ValueError(f"the model's target is {spec.get('target', 'liver')!r}, not 'lesions'")
    liver_here = liver if same_grid(liver, vol) else resample_to(liver, vol, order=0)
    inside = np.asarray(liver_here.array) > 0
    prepared = lesion_input(vol, modality, spec["spacing_mm"], liver)
    prob = probability_on(model, spec, prepared, vol, **predict_kwargs)
    p = np.where(inside, np.asarray(prob.array), 0.0).astype(np.float32)
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000.0
    labels = instance_labels(p, threshold=threshold, min_voxels=max(1, int(np.ceil(min_ml / voxel_ml))))
    return LesionSegmentation(vol.with_array(labels), vol.with_array(p), describe_lesions(labels, p, voxel_ml))

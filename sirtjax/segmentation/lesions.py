"""Lesion segmentation inside a liver mask (thesis 7.3.2.2): one instance id per lesion, with its confidence.

The lesion model sees the image on its canonical grid (2 mm for the shipped one), kept within
LIVER_MARGIN_MM of the liver and cropped to that box (`lesion_input`). Its probability map is
resampled trilinearly onto the image grid and kept inside the liver mask; lesions are the
6-connected components above the threshold of at least `min_ml` that the image shows, numbered
1..n by decreasing volume. "Shows" is the Rose criterion that the training labels follow
(`sirtjax.segmentation.visibility`): the component's contrast-to-noise ratio against the liver
around it, integrated over its voxels, on the windowed image and its own grid, is at least
`min_cnr`. A lesion's confidence is its mean probability; its diameter is that of the sphere of its
volume. Approximate: touching lesions that the network does not separate are one instance, and the
criterion takes the noise as independent between voxels (lenient on correlated noise).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import nnx
from scipy import ndimage

from sirtjax.preprocess import resample_to
from sirtjax.segmentation.infer import probability_on
from sirtjax.segmentation.postprocess import foreground_box, instance_labels
from sirtjax.segmentation.preprocess import lesion_input, normalize_intensity
from sirtjax.segmentation.visibility import ROSE_K, lesion_cnr, measured_cnr, shown_ids
from sirtjax.volume import Volume, same_grid

MIN_LESION_ML = 0.03  # about a 4 mm sphere: smaller components are not reported as lesions


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One segmented lesion: its id in the label map, volume (ml), equivalent diameter (mm), mean and peak probability,
    and its integrated contrast-to-noise ratio against the liver around it (None: too little liver around it to say)."""

    id: int
    volume_ml: float
    diameter_mm: float
    confidence: float
    peak_probability: float
    cnr: float | None = None

    def to_json(self) -> dict[str, float | None]:
        """The lesion as JSON values (rounded)."""
        return {"id": self.id, "volume_ml": round(self.volume_ml, 3), "diameter_mm": round(self.diameter_mm, 1),
                "confidence": round(self.confidence, 3), "peak_probability": round(self.peak_probability, 3),
                "cnr": None if self.cnr is None else round(self.cnr, 1)}


@dataclasses.dataclass(frozen=True)
class LesionSegmentation:
    """Lesion instances (int32, 0 background) and probability (float32) on the image grid, and each lesion."""

    labels: Volume
    probability: Volume
    lesions: tuple[Lesion, ...]


def describe_lesions(labels: np.ndarray, probability: np.ndarray, voxel_ml: float, cnr: np.ndarray | None = None) -> tuple[Lesion, ...]:
    """A Lesion per id > 0 of an instance map, its confidence the mean of `probability` over it; `cnr`, indexed by id
    (nan: not measurable), gives each its contrast-to-noise ratio. Computed within the lesions' bounding box."""
    box = foreground_box(np.asarray(labels) > 0)
    if box is None:
        return ()
    labels, probability = np.asarray(labels)[box], np.asarray(probability)[box]
    counts = np.bincount(labels.ravel())
    ids = [int(i) for i in np.flatnonzero(counts) if i > 0]
    counts = counts[ids]
    means = ndimage.mean(probability, labels, ids)
    peaks = ndimage.maximum(probability, labels, ids)
    out = []
    for i, n, m, p in zip(ids, counts, means, peaks):
        ml = float(n) * voxel_ml
        c = None if cnr is None or not np.isfinite(cnr[i]) else float(cnr[i])
        out.append(Lesion(i, ml, float((6.0 * ml * 1000.0 / np.pi) ** (1.0 / 3.0)), float(m), float(p), c))
    return tuple(out)


def instance_cnr(vol: Volume, labels: np.ndarray, liver: np.ndarray, modality: str) -> np.ndarray:
    """(n + 1,) the integrated contrast-to-noise ratio of each id 1..n of `labels` (inside the bool `liver`, both on
    `vol`'s grid) in `vol` windowed as the network sees it, against the liver ring around it, nan where not measurable
    (`sirtjax.segmentation.visibility.measured_cnr`). Computed within the liver's bounding box."""
    n = int(labels.max())
    if n == 0:
        return np.full(1, np.nan)
    box = ndimage.find_objects(liver.astype(np.uint8))[0]
    image = normalize_intensity(np.asarray(vol.array, np.float32), modality)[box]  # the MR window spans the whole image
    return np.asarray(measured_cnr(*lesion_cnr(image, labels[box], liver[box] & (labels[box] == 0), n + 1)))


def segment_lesions(
    model: nnx.Module,
    spec: dict[str, Any],
    vol: Volume,
    liver: Volume,
    *,
    modality: str,
    threshold: float = 0.5,
    min_ml: float = MIN_LESION_ML,
    min_cnr: float = ROSE_K,
    **predict_kwargs: Any,
) -> LesionSegmentation:
    """Lesions of `vol` inside the 0/1 `liver` mask (any grid) with a lesion model (see the module docstring);
    min_cnr 0 keeps every component, whatever the image shows.

    `predict_kwargs` (tta, batch_size, on_batch) go to :func:`~sirtjax.segmentation.infer.probability_on`.
    """
    if spec.get("target") != "lesions":
        raise ValueError(f"the model's target is {spec.get('target', 'liver')!r}, not 'lesions'")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1), got {threshold}")
    liver_here = liver if same_grid(liver, vol) else resample_to(liver, vol, order=0)
    inside = np.asarray(liver_here.array) > 0
    prepared = lesion_input(vol, modality, spec["spacing_mm"], liver)
    prob = probability_on(model, spec, prepared, vol, **predict_kwargs)
    p = np.where(inside, np.asarray(prob.array), 0.0).astype(np.float32)
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000.0
    labels = instance_labels(p, threshold=threshold, min_voxels=max(1, int(np.ceil(min_ml / voxel_ml))))
    cnr = instance_cnr(vol, labels, inside, modality)
    shown = np.asarray(shown_ids(cnr, min_cnr))
    lut = np.zeros(len(cnr), np.int32)  # ids stay in decreasing-volume order, renumbered 1..m
    lut[shown] = np.arange(1, int(shown.sum()) + 1)
    labels = lut[labels]
    kept_cnr = np.concatenate([[np.nan], cnr[shown]])  # by new id
    return LesionSegmentation(vol.with_array(labels), vol.with_array(p), describe_lesions(labels, p, voxel_ml, kept_cnr))

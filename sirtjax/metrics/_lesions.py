"""Lesion-wise detection: sensitivity and precision with the counting rules of thesis 7.3.3 (host).

Lesions are the instances of a label map (each non-zero id one lesion) or, for a binary mask, its
connected components (26-connected). With any shared voxel counting as overlap:

- every reference lesion overlapped by at least one predicted lesion is one TP (so a prediction
  overlapping several reference lesions makes each of them a TP), the others are FN;
- every predicted lesion overlapping no reference lesion is one FP;
- sensitivity = TP / (TP + FN), precision = TP / (TP + FP).

A ratio with a zero denominator (no reference lesions; no TP and no FP) is undefined and
reported as None, never NaN; the counts are always given.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from sirtjax.metrics._inputs import MaskLike, as_labels, as_pair, label_boxes

_TWENTY_SIX_CONNECTED = np.ones((3, 3, 3), bool)


@dataclasses.dataclass(frozen=True)
class LesionDetection:
    """Lesion-wise counts and rates; per reference lesion its id, volume (ml) and detection."""

    n_ref: int
    n_pred: int
    tp: int
    fn: int
    fp: int
    sensitivity: float | None
    precision: float | None
    ref_ids: tuple[int, ...]
    ref_volumes_ml: tuple[float, ...]
    ref_detected: tuple[bool, ...]

    def to_json(self) -> dict:
        """A dict of plain JSON values."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def lesion_instances(labels: np.ndarray, components: bool | None = None) -> np.ndarray:
    """Lesion instance map (z, y, x) int32: ids as given, or 26-connected components of the mask.

    ``components=None`` decides from the data: a map whose only non-zero label is 1 (a binary
    mask) is split into connected components, a map with several ids is taken as instances.
    """
    labels = as_labels(labels, "lesions")
    if components is None:
        components = labels.max(initial=0) <= 1
    if components:
        return ndimage.label(labels != 0, structure=_TWENTY_SIX_CONNECTED)[0].astype(np.int32)
    return labels.astype(np.int32, copy=False)


def lesion_detection(
    pred: MaskLike, ref: MaskLike, *, spacing_mm=None, components: bool | None = None
) -> LesionDetection:
    """Lesion-wise sensitivity and precision of predicted vs reference lesions (see module doc).

    Args:
      pred, ref: lesion instance maps or binary lesion masks (z, y, x) on one grid: two Volumes,
        or two arrays plus ``spacing_mm`` in ITK (x, y, z) order (used for lesion volumes).
      components: as in :func:`lesion_instances`, applied to both maps.
    """
    p, r = as_pair(pred, ref, spacing_mm)
    pi = lesion_instances(p.array, components)
    ri = lesion_instances(r.array, components)
    pred_ids, ref_ids = sorted(label_boxes(pi)), sorted(label_boxes(ri))
    both = (pi != 0) & (ri != 0)
    pairs = np.unique(np.stack([pi[both], ri[both]]), axis=1)  # (2, overlapping id pairs)
    hit_refs = set(pairs[1].tolist())
    hit_preds = set(pairs[0].tolist())
    tp = len(hit_refs)
    fp = len(set(pred_ids) - hit_preds)
    fn = len(ref_ids) - tp
    voxel_ml = float(np.prod(np.asarray(r.spacing_mm, np.float64))) / 1000.0
    counts = np.bincount(ri.ravel(), minlength=(max(ref_ids) + 1) if ref_ids else 1)
    return LesionDetection(
        n_ref=len(ref_ids),
        n_pred=len(pred_ids),
        tp=tp,
        fn=fn,
        fp=fp,
        sensitivity=tp / (tp + fn) if tp + fn else None,
        precision=tp / (tp + fp) if tp + fp else None,
        ref_ids=tuple(ref_ids),
        ref_volumes_ml=tuple(float(counts[i]) * voxel_ml for i in ref_ids),
        ref_detected=tuple(i in hit_refs for i in ref_ids),
    )

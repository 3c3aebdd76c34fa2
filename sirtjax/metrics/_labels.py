"""Overlap, volume, surface-distance and mass-centre metrics per label of two label maps (host).

One definition each (DESIGN.md "Metrics"): DSC = 2|P∩R|/(|P|+|R|); RV = V_pred/V_ref; volumes in
ml; surface distances as in :mod:`sirtjax.metrics._surface`; MCD between world mass centres.
Labels are the union of the non-zero labels present in either map; each is evaluated inside the
bounding box of its two masks (padded by one voxel), so small labels cost little.

Empty masks (a label absent from one or both maps), with ``empty`` saying which:

- both empty ("both"): DSC 1, RV 1, every distance 0 (nothing to disagree on);
- pred empty ("pred"): DSC 0, RV 0, every distance ``inf``;
- ref empty ("ref"): DSC 0, RV ``inf``, every distance ``inf``.

``inf`` stays a float in Python; :meth:`LabelMetrics.to_json` writes it as ``null`` (strict JSON)
next to the ``empty`` flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator

import numpy as np

from sirtjax.metrics._centres import box_centre_zyx
from sirtjax.metrics._inputs import (
    MaskLike,
    as_labels,
    as_pair,
    as_volume,
    centre_index_to_world,
    label_boxes,
    spacing_zyx,
)
from sirtjax.metrics._surface import directed_distances_mm, pad_box, summarise_distances
from sirtjax.volume import Volume


@dataclasses.dataclass(frozen=True)
class LabelMetrics:
    """Every metric of one label; distances in mm, volumes in ml (see module doc for empties)."""

    label: int
    dsc: float
    rv: float
    volume_pred_ml: float
    volume_ref_ml: float
    assd_mm: float
    hd_mm: float
    hd95_mm: float
    msd_pred_to_ref_mm: float
    msd_ref_to_pred_mm: float
    mcd_mm: float
    empty: str  # "none", "pred", "ref" or "both"

    def to_json(self) -> dict:
        """A dict of plain JSON values: non-finite floats become None (see ``empty``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}


def _pair_metrics(label: int, p: np.ndarray, r: np.ndarray, vol: Volume, offset: tuple[int, ...]) -> LabelMetrics:
    """Metrics of bool masks p, r cropped (box at offset (z, y, x)) from a grid like vol."""
    voxel_ml = float(np.prod(np.asarray(vol.spacing_mm, np.float64))) / 1000.0
    n_p, n_r = int(p.sum()), int(r.sum())
    inter = int(np.logical_and(p, r).sum())
    empty = {(0, 0): "both", (0, 1): "pred", (1, 0): "ref"}.get((min(n_p, 1), min(n_r, 1)), "none")
    dist = summarise_distances(*directed_distances_mm(p, r, spacing_zyx(vol)))
    if empty == "none":
        cp = centre_index_to_world(vol, box_centre_zyx(p, offset))
        cr = centre_index_to_world(vol, box_centre_zyx(r, offset))
        mcd_mm = float(np.linalg.norm(cp - cr))
    else:
        mcd_mm = 0.0 if empty == "both" else math.inf
    return LabelMetrics(label, _dsc(n_p, n_r, inter), _rv(n_p, n_r), n_p * voxel_ml, n_r * voxel_ml, mcd_mm=mcd_mm, empty=empty,
                        **dataclasses.asdict(dist))


def label_metrics(
    pred: MaskLike, ref: MaskLike, *, spacing_mm=None, labels: Iterable[int] | None = None
) -> dict[int, LabelMetrics]:
    """Metrics per label of two label maps on one grid, keyed by label, ascending.

    Args:
      pred, ref: two Volumes on one grid, or two (z, y, x) arrays plus ``spacing_mm`` in ITK
        (x, y, z) order; non-negative integer labels, 0 is background.
      labels: the labels to evaluate; default the union of non-zero labels present in either map.
        A requested label absent from both is reported with ``empty == "both"``.
    """
    return {m.label: m for m in iter_label_metrics(pred, ref, spacing_mm=spacing_mm, labels=labels)[1]}


def iter_label_metrics(
    pred: MaskLike, ref: MaskLike, *, spacing_mm=None, labels: Iterable[int] | None = None
) -> tuple[int, Iterator[LabelMetrics]]:
    """(number of labels, lazy iterator of LabelMetrics in ascending label order); see label_metrics.

    For progress reporting: inputs are validated before this returns, each label is computed when
    the iterator reaches it.
    """
    p, r = as_pair(pred, ref, spacing_mm)
    pa, ra = as_labels(p.array, "pred"), as_labels(r.array, "ref")
    boxes_p, boxes_r = label_boxes(pa), label_boxes(ra)
    wanted = sorted(set(boxes_p) | set(boxes_r) if labels is None else {int(i) for i in labels})
    if any(i <= 0 for i in wanted):
        raise ValueError(f"labels must be positive, got {wanted}")

    def compute() -> Iterator[LabelMetrics]:
        for lab in wanted:
            box = pad_box(_union(boxes_p.get(lab), boxes_r.get(lab)), pa.shape)
            offset = tuple(s.start for s in box)
            yield _pair_metrics(lab, pa[box] == lab, ra[box] == lab, p, offset)

    return len(wanted), compute()


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def mask_metrics(pred: MaskLike, ref: MaskLike, *, spacing_mm=None) -> LabelMetrics:
    """Every metric of two binary masks (nonzero = object) on one grid, reported as label 1."""
    p, r = as_pair(pred, ref, spacing_mm)
    pb = p.with_array((np.asarray(p.array) != 0).view(np.uint8))
    rb = r.with_array((np.asarray(r.array) != 0).view(np.uint8))
    return label_metrics(pb, rb, labels=[1])[1]


def _dsc(n_pred: int, n_ref: int, n_inter: int) -> float:
    return 1.0 if n_pred + n_ref == 0 else 2.0 * n_inter / (n_pred + n_ref)


def _rv(n_pred: int, n_ref: int) -> float:
    if n_ref == 0:
        return 1.0 if n_pred == 0 else math.inf
    return n_pred / n_ref


def _binary_pair(pred: MaskLike, ref: MaskLike) -> tuple[np.ndarray, np.ndarray]:
    pm = np.asarray(pred.array if isinstance(pred, Volume) else pred) != 0
    rm = np.asarray(ref.array if isinstance(ref, Volume) else ref) != 0
    if pm.shape != rm.shape:
        raise ValueError(f"pred shape {pm.shape} differs from ref shape {rm.shape}")
    return pm, rm


def dice(pred: MaskLike, ref: MaskLike) -> float:
    """Dice similarity coefficient of two binary masks (nonzero = object), arrays or Volumes.

    Both empty -> 1.0; exactly one empty -> 0.0. Spacing cancels, so none is needed.
    """
    pm, rm = _binary_pair(pred, ref)
    return _dsc(int(pm.sum()), int(rm.sum()), int(np.logical_and(pm, rm).sum()))


def relative_volume(pred: MaskLike, ref: MaskLike) -> float:
    """RV = V_pred / V_ref of two binary masks (nonzero = object) on one grid.

    Both empty -> 1.0; pred empty -> 0.0; ref empty (pred not) -> inf.
    """
    pm, rm = _binary_pair(pred, ref)
    return _rv(int(pm.sum()), int(rm.sum()))


def volume_ml(mask: MaskLike, *, spacing_mm=None) -> float:
    """Volume of a binary mask's nonzero voxels in ml (0 for an empty mask)."""
    vol = as_volume(mask, spacing_mm, "mask")
    return int(np.count_nonzero(vol.array)) * float(np.prod(np.asarray(vol.spacing_mm, np.float64))) / 1000.0

"""Registration error from liver surfaces and landmark centres: RMSD and RRMSD (thesis 5.3.4)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from sirtjax.metrics._inputs import MaskLike, as_labels, as_pair, label_boxes
from sirtjax.metrics._labels import label_metrics
from sirtjax.metrics._surface import pad_box, surface_metrics


@dataclasses.dataclass(frozen=True)
class RMSDResult:
    """RMSD of one registration (mm) with its parts: liver MSD (= ASSD) and MCD per landmark id."""

    rmsd_mm: float
    msd_mm: float
    mcd_mm: dict[int, float]
    missing_in_pred: tuple[int, ...]
    missing_in_ref: tuple[int, ...]

    def to_json(self) -> dict:
        """A dict of plain JSON values (non-finite floats become None, landmark ids strings)."""
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"rmsd_mm": clean(self.rmsd_mm), "msd_mm": clean(self.msd_mm),
                "mcd_mm": {str(k): clean(v) for k, v in self.mcd_mm.items()},
                "missing_in_pred": list(self.missing_in_pred), "missing_in_ref": list(self.missing_in_ref)}


def rmsd(pred: MaskLike, ref: MaskLike, *, spacing_mm=None, liver_label: int = 1) -> RMSDResult:
    """RMSD = sqrt((MSD² + Σ MCD_i²) / (1 + N)) of two label maps (liver + landmarks) in mm.

    Args:
      pred, ref: label maps on one grid (two Volumes, or two (z, y, x) arrays plus ``spacing_mm``
        in ITK (x, y, z) order), typically the warped floating and the reference labels: the liver
        is ``liver_label``, every other non-zero id is one landmark (lesion, clip), the same id in
        both maps.

    Returns:
      MSD is the ASSD of the two livers as :func:`liver_mask` defines them (the outer contour:
      landmarks drawn over the liver count as liver, so they leave no inner surfaces). The N
      landmarks are the ids present in both maps; ids present in only one are listed as missing
      and left out (the thesis evaluates landmarks seen in both images). A liver present in only
      one map gives MSD = RMSD = inf; absent from both, MSD 0.
    """
    p, r = as_pair(pred, ref, spacing_mm)
    ids_p = set(label_boxes(as_labels(p.array, "pred"))) - {liver_label}
    ids_r = set(label_boxes(as_labels(r.array, "ref"))) - {liver_label}
    common = sorted(ids_p & ids_r)
    liver_p = p.with_array(liver_mask(p.array, liver_label).view(np.uint8))
    liver_r = r.with_array(liver_mask(r.array, liver_label).view(np.uint8))
    msd_mm = surface_metrics(liver_p, liver_r).assd_mm
    mcds = {i: m.mcd_mm for i, m in label_metrics(p, r, labels=common).items()}
    total = msd_mm**2 + sum(d**2 for d in mcds.values())
    return RMSDResult(
        rmsd_mm=math.sqrt(total / (1 + len(common))),
        msd_mm=msd_mm,
        mcd_mm=mcds,
        missing_in_pred=tuple(sorted(ids_r - ids_p)),
        missing_in_ref=tuple(sorted(ids_p - ids_r)),
    )


def liver_mask(labels: np.ndarray, liver_label: int = 1) -> np.ndarray:
    """The liver (z, y, x) bool of a combined label map, landmarks drawn over it included.

    That is the ``liver_label`` voxels, every landmark (other non-zero id) touching them
    (26-neighbourhood), and the enclosed holes filled; all False when the liver is absent.
    """
    labels = as_labels(labels, "labels")
    liver = labels == liver_label
    box = label_boxes(liver.view(np.uint8)).get(1)
    if box is None:
        return liver
    box = pad_box(box, liver.shape)
    near = ndimage.binary_dilation(liver[box], structure=np.ones((3, 3, 3), bool))
    touching = np.setdiff1d(np.unique(labels[box][near]), [0, liver_label])
    grown = liver | np.isin(labels, touching)
    box = pad_box(label_boxes(grown.view(np.uint8))[1], liver.shape)
    grown[box] = ndimage.binary_fill_holes(grown[box])
    return grown


def rrmsd(rmsds: Iterable[float | RMSDResult]) -> float:
    """Root mean square (mm) of the RMSDs of several registrations; ValueError on none; inf stays inf."""
    values = np.asarray([v.rmsd_mm if isinstance(v, RMSDResult) else float(v) for v in rmsds], np.float64)
    if values.size == 0:
        raise ValueError("RRMSD of no registrations is undefined")
    return float(np.sqrt(np.mean(values**2)))

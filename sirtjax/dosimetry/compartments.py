"""Compartments measured on a MAA SPECT: volumes, counts, T/N ratios and the lung shunt fraction.

The masks are brought onto the SPECT grid (nearest neighbour, see :mod:`sirtjax.dosimetry.masks`).
The liver region is the liver mask united with the lesions; normal liver is that region without
lesions; each lesion instance is one tumour compartment; the lung shunt fraction is the counts in
the lung mask over the counts in lungs plus liver (when a lung mask is given).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sirtjax.dosimetry.activity import lung_shunt_fraction, tumour_to_normal_ratios
from sirtjax.dosimetry.dose import voxel_volume_ml
from sirtjax.dosimetry.masks import blame
from sirtjax.preprocess import labels_on_grid
from sirtjax.volume import Volume


@dataclasses.dataclass(frozen=True)
class MeasuredCompartments:
    """Volumes (ml), counts and T/N ratios of normal liver and each tumour, and the LSF if measured."""

    normal_volume_ml: float
    normal_counts: float
    tumour_ids: tuple[int, ...]  # the lesion label of each tumour
    tumour_volume_ml: np.ndarray
    tumour_counts: np.ndarray
    tn_ratios: np.ndarray
    lung_shunt_fraction: float | None
    masks: dict

    @property
    def tumour_names(self) -> tuple[str, ...]:
        """The tumours' names, lesion_<id>."""
        return tuple(f"lesion_{i}" for i in self.tumour_ids)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "normal_volume_ml": self.normal_volume_ml,
            "normal_counts": self.normal_counts,
            "tumours": [{"name": n, "volume_ml": float(v), "counts": float(c), "tn_ratio": float(r)} for n, v, c, r
                        in zip(self.tumour_names, self.tumour_volume_ml, self.tumour_counts, self.tn_ratios)],
            "lung_shunt_fraction": self.lung_shunt_fraction,
            "masks": self.masks,
        }


def measure_compartments(spect: Volume, liver: Volume, *, lesions: Volume | None = None,
                         lungs: Volume | None = None) -> MeasuredCompartments:
    """Measure compartments on a SPECT (counts, (z, y, x)).

    Raises :class:`~sirtjax.dosimetry.masks.DoseInputError` naming the input (spect, liver, lesions,
    lungs) for empty masks, masks off the grid or negative counts.
    """
    counts = np.asarray(spect.array, np.float32)
    if np.any(counts < 0):
        with blame("spect"):
            raise ValueError("the SPECT has negative counts")
    masks = {}
    with blame("liver"):
        liver_arr, masks["liver"] = labels_on_grid(liver, spect, "liver")
    lesion_arr = np.zeros(spect.shape, np.int32)
    if lesions is not None:
        with blame("lesions"):
            lesion_arr, masks["lesions"] = labels_on_grid(lesions, spect, "lesions")
    region = (liver_arr > 0) | (lesion_arr > 0)
    if not np.any(region):
        with blame("liver"):
            raise ValueError("the liver mask is empty on the SPECT grid")
    ml = voxel_volume_ml(spect.spacing_mm)
    ids = [int(i) for i in np.unique(lesion_arr) if i > 0]
    compact = np.zeros(int(lesion_arr.max()) + 1, np.int32)
    compact[ids] = np.arange(1, len(ids) + 1)
    tumour_labels = compact[lesion_arr]
    tumour_counts = np.bincount(tumour_labels.ravel(), weights=counts.ravel(), minlength=len(ids) + 1)[1:]
    tumour_ml = np.bincount(tumour_labels.ravel(), minlength=len(ids) + 1)[1:] * ml
    normal = region & (lesion_arr == 0)
    normal_counts = float(counts[normal].sum(dtype=np.float64))
    normal_ml = float(np.count_nonzero(normal)) * ml
    with blame("spect"):
        tn = tumour_to_normal_ratios(tumour_counts, tumour_ml, normal_counts, normal_ml) if ids else np.zeros(0)
    lsf = None
    if lungs is not None:
        with blame("lungs"):
            lung_arr, masks["lungs"] = labels_on_grid(lungs, spect, "lungs")
            lung_arr = (lung_arr > 0) & ~region
            if not np.any(lung_arr):
                raise ValueError("the lung mask is empty on the SPECT grid (outside the liver)")
            lung_counts = float(counts[lung_arr].sum(dtype=np.float64))
        with blame("spect"):
            lsf = lung_shunt_fraction(lung_counts, float(counts[region].sum(dtype=np.float64)))
    return MeasuredCompartments(normal_ml, normal_counts, tuple(int(i) for i in ids), tumour_ml,
                                np.asarray(tumour_counts, float), np.asarray(tn, float), lsf, masks)

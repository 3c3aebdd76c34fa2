"""DICOM Segmentation (SEG) export of VOIs with highdicom, for viewers that read SEG rather than RT-Struct.

:func:`seg_dataset` makes one binary SEG instance from masks on a CT grid and the CT slices written
for them (:func:`sirtjax.io.dicom_export.dicom_series`): one segment per VOI, each frame referencing
its CT slice, so the SEG carries the voxels themselves, not contours. Segments are coded with
SNOMED CT: the liver and lungs as anatomical structures, lesions (RT ROI type GTV) as neoplasms,
any other organ as "Organ". A VOI the user gave is a MANUAL segment; one that sirtjax made
(segmented, mapped by registration, thresholded) is AUTOMATIC, identified as sirtjax and its version.
Empty VOIs are left out: a SEG segment needs at least one voxel.

Why highdicom and not our own writer: SEG is a multi-frame functional-groups object (per-frame
plane positions, derivation and dimension indices) that highdicom builds and checks against the
standard; the RT-Struct stays our own (:mod:`sirtjax.io.rtstruct`), since it is contours, which
highdicom does not write, and rt-utils would re-read the CT from disk for what we already hold.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from pydicom.dataset import Dataset

from sirtjax.report.colours import voi_colour_rgb

_ORGANS = {"liver": "Liver", "lungs": "Lung", "lung": "Lung"}  # VOI name -> SNOMED CT concept (pydicom's codes.SCT)


def _coding(name: str, roi_type: str):
    """(segmented property category, type) SNOMED CT codes of a VOI."""
    from pydicom.sr.codedict import codes

    if roi_type == "GTV":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _ORGANS.get(name.lower(), "Organ"))


def seg_dataset(slices: list[Dataset], masks: Mapping[str, np.ndarray], roi_types: Mapping[str, str],
                given: Collection[str] = (), *, series_number: int = 4) -> Dataset:
    """A binary DICOM SEG of the non-empty masks (z, y, x, bool, on the grid of ``slices``, slice k = mask[k]).

    Args:
      slices: the CT slices the masks lie on, in z order, as written beside the SEG.
      masks: VOI name -> bool mask; segments are numbered in this order, empty masks skipped.
      roi_types: VOI name -> RT ROI Interpreted Type ('GTV' for lesions; default organ).
      given: the VOIs the user supplied (MANUAL segments); the others are sirtjax's (AUTOMATIC).
      series_number: the SEG's series number.

    Raises ValueError when every mask is empty.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    import sirtjax

    names = [n for n, m in masks.items() if np.any(m)]
    if not names:
        raise ValueError("every VOI is empty; a DICOM SEG needs at least one voxel")
    algorithm = hd.AlgorithmIdentificationSequence(name="sirtjax", family=codes.cid7162.ArtificialIntelligence,
                                                   version=sirtjax.__version__)
    descriptions = []
    for number, name in enumerate(names, start=1):
        category, kind = _coding(name, roi_types.get(name, "ORGAN"))
        manual = name in given
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type="MANUAL" if manual else "AUTOMATIC",
            algorithm_identification=None if manual else algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(c / 255.0 for c in voi_colour_rgb(name)))))
    pixels = np.stack([np.asarray(masks[n], bool) for n in names], axis=-1)  # (frames, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=pixels, segmentation_type="BINARY", segment_descriptions=descriptions,
        series_instance_uid=generate_uid(), series_number=series_number, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="sirtjax", manufacturer_model_name="sirtjax",
        software_versions=sirtjax.__version__, device_serial_number="none", content_label="VOIS",
        content_description="sirtjax VOIs")
    return seg

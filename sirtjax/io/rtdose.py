"""DICOM RT Dose export of an absorbed-dose map (Gy), for clinical viewers and dosimetry records.

:func:`rtdose_dataset` makes one multi-frame RT Dose instance on the dose map's own grid (the SPECT
or PET grid of the workflows). It takes the patient, study and frame-of-reference tags of the CT
that :func:`sirtjax.io.rtstruct.write_rtstruct` writes beside it, so viewers (3D Slicer, MIM, Eclipse,
RayStation) overlay the dose on that CT. Frames are stored along the normal of the rows and
columns (Grid Frame Offset Vector increasing from 0); a left-handed grid is written in reverse
slice order so the offsets stay increasing. Values are unsigned integers times Dose Grid Scaling:
32-bit by default, which quantises the dose to (maximum dose) / (2^32 - 1), far below float32
precision; 16-bit on request (step (maximum dose) / 65535, e.g. 3 mGy for a 200 Gy peak) for
viewers that read only 16-bit RT Dose (AMIDE 1.0.6 aborts on 32-bit pixel data).

Approximation and known gap: a dose from FFT convolution may carry round-off below zero; values
down to -1e-4 of the maximum are stored as 0, more negative ones are refused. The standard asks a
PLAN dose to reference its RT Plan and a RECORD dose its treatment record (Type 1C); a SIRT plan
or delivery has neither as a DICOM object, so none is referenced, and dciodvfy reports exactly
that condition and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from sirtjax.io.dicom_export import dicom_dataset, dicom_decimals
from sirtjax.volume import Volume

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
SUMMATION_TYPES = ("PLAN", "RECORD")  # a predicted dose (sirtjax plan); a delivered one (sirtjax verify)
BITS_ALLOCATED = (16, 32)
_NEGATIVE_ROUND_OFF = 1e-4


def rtdose_dataset(dose_gy: Volume, common: Mapping, *, summation: str = "PLAN", description: str = "sirtjax dose",
                   bits: int = 32) -> Dataset:
    """An RT Dose Dataset of a dose map in Gy (any orthonormal grid) with the shared tags of ``common``.

    Args:
      dose_gy: absorbed dose (Gy), array (z, y, x), finite, not below zero (see the module docstring).
      common: tags shared with the CT it overlays (PatientName, PatientID, StudyInstanceUID,
        FrameOfReferenceUID, ...); set after the defaults.
      summation: Dose Summation Type, 'PLAN' (predicted) or 'RECORD' (delivered).
      description: series description.
      bits: Bits Allocated of the unsigned pixel values, 32 (default) or 16.

    Raises ValueError for a non-3D or non-finite dose, negative doses beyond round-off, an unknown
    summation type or bit depth.
    """
    if summation not in SUMMATION_TYPES:
        raise ValueError(f"dose summation type must be one of {SUMMATION_TYPES}, got {summation!r}")
    if bits not in BITS_ALLOCATED:
        raise ValueError(f"RT Dose bits must be one of {BITS_ALLOCATED}, got {bits!r}")
    dtype = np.dtype(f"<u{bits // 8}")
    top = np.iinfo(dtype).max
    dose = np.asarray(dose_gy.array, np.float64)
    if dose.ndim != 3 or not np.all(np.isfinite(dose)):
        raise ValueError("an RT Dose needs a finite 3D dose map")
    peak = float(dose.max(initial=0.0))
    if dose.min(initial=0.0) < -_NEGATIVE_ROUND_OFF * peak - 1e-12:
        raise ValueError(f"the dose map has negative values (min {dose.min():.4g} Gy) beyond round-off")
    d = np.asarray(dose_gy.direction, np.float64)
    spacing = np.asarray(dose_gy.spacing_mm, np.float64)
    origin = np.asarray(dose_gy.origin_mm, np.float64)
    normal = np.cross(d[:, 0], d[:, 1])
    if float(normal @ d[:, 2]) < 0:  # left-handed grid: store the slices in reverse so offsets increase
        origin = origin + (dose.shape[0] - 1) * spacing[2] * d[:, 2]
        dose = dose[::-1]
    scaling_ds = dicom_decimals([peak / top if peak > 0 else 1.0])[0]
    scaling = float(scaling_ds)  # quantise with the value as written
    pixels = np.clip(np.rint(np.maximum(dose, 0.0) / scaling), 0, top).astype(dtype)
    now = time.localtime()
    tags = {
        "Modality": "RTDOSE", "SeriesInstanceUID": generate_uid(), "SeriesNumber": 3, "SeriesDescription": description, "OperatorsName": "",
        "InstanceNumber": 1, "ContentDate": time.strftime("%Y%m%d", now), "ContentTime": time.strftime("%H%M%S", now),
        "ImagePositionPatient": dicom_decimals(origin), "ImageOrientationPatient": dicom_decimals([*d[:, 0], *d[:, 1]]),
        "PixelSpacing": dicom_decimals([spacing[1], spacing[0]]), "SliceThickness": dicom_decimals([spacing[2]])[0],
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "Rows": dose.shape[1], "Columns": dose.shape[2],
        "BitsAllocated": bits, "BitsStored": bits, "HighBit": bits - 1, "PixelRepresentation": 0,
        "NumberOfFrames": dose.shape[0], "FrameIncrementPointer": Tag(0x3004, 0x000C),
        "GridFrameOffsetVector": dicom_decimals(np.arange(dose.shape[0]) * spacing[2]),
        "DoseUnits": "GY", "DoseType": "PHYSICAL", "DoseSummationType": summation, "DoseGridScaling": scaling_ds,
    }
    ds = dicom_dataset(RT_DOSE_STORAGE, {**tags, **common})
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds

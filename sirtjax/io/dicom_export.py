"""DICOM objects that sirtjax writes: new datasets, decimal strings, and a Volume as an image series.

:func:`dicom_series` is the one series writer, behind :func:`sirtjax.io.write_volume` and the RT-Struct's
referenced CT (:mod:`sirtjax.io.rtstruct`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sirtjax.volume import Volume, index_to_world

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def dicom_dataset(sop_class: str, tags: dict | None = None):
    """A new pydicom Dataset of a SOP class: file meta (explicit VR little endian), fresh SOP Instance UID, UTF-8, tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    for key, value in (tags or {}).items():
        setattr(ds, key, value)
    return ds


def dicom_decimals(values) -> list:
    """Numbers as DICOM decimal strings (DS, at most 16 characters each)."""
    import pydicom

    return [pydicom.valuerep.DSfloat(float(v), auto_format=True) for v in values]


def dicom_series(vol: Volume, *, modality: str = "OT", tags: dict | None = None,
                 description: str = "sirtjax") -> list:
    """The slices of a scalar Volume as pydicom Datasets (one per z index k, ready to save), in patient space (LPS mm).

    modality 'CT': CT Image Storage, values rounded to integer HU and clipped to int16 (Rescale
    Slope 1, Intercept 0, Rescale Type HU), as an RT-Struct's referenced CT. Any other modality
    (default 'OT'): Secondary Capture Image Storage; integer volumes within int16 are stored as they
    are, others as int16 = (value - intercept) / slope (quantisation step = range / 64000). Every
    slice carries Image Position/Orientation (the Volume's full geometry, also oblique or
    left-handed), Pixel Spacing and a Frame of Reference. ``tags`` (attribute keyword -> value,
    e.g. PatientID, StudyInstanceUID, FrameOfReferenceUID) are set on every slice after the
    defaults; new study, series and frame-of-reference UIDs are generated unless given there.
    """
    from pydicom.uid import generate_uid

    array = np.asarray(vol.array)
    if array.ndim != 3:
        raise ValueError("only scalar images can be written as a DICOM series")
    ct = modality.upper() == "CT"
    pixels, slope, intercept = _int16_pixels(array, round_to_integer=ct)
    sop_class = CT_IMAGE_STORAGE if ct else SECONDARY_CAPTURE_IMAGE_STORAGE
    d = np.asarray(vol.direction, np.float64)
    sx, sy, sz = (float(v) for v in np.asarray(vol.spacing_mm))
    affine = index_to_world(vol)
    now = time.localtime()
    date, clock = time.strftime("%Y%m%d", now), time.strftime("%H%M%S", now)

    common = {"PatientName": "", "PatientID": "", "PatientBirthDate": "",
              "PatientSex": "", "StudyInstanceUID": generate_uid(), "StudyDate": date, "StudyTime": clock,
              "ReferringPhysicianName": "", "StudyID": "", "AccessionNumber": "", "Manufacturer": "sirtjax",
              "SeriesInstanceUID": generate_uid(), "SeriesNumber": 1, "SeriesDescription": description,
              "Modality": modality.upper(), "Laterality": "", "FrameOfReferenceUID": generate_uid(),
              "PositionReferenceIndicator": "", "ContentDate": date, "ContentTime": clock,
              "ImageOrientationPatient": dicom_decimals([*d[:, 0], *d[:, 1]]),
              "PixelSpacing": dicom_decimals([sy, sx]),  # between rows (along y), then between columns
              "SliceThickness": dicom_decimals([sz])[0],
              "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "Rows": array.shape[1],
              "Columns": array.shape[2], "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
              "PixelRepresentation": 1, "RescaleIntercept": dicom_decimals([intercept])[0],
              "RescaleSlope": dicom_decimals([slope])[0]}
    if ct:
        common.update(ImageType=["DERIVED", "SECONDARY", "AXIAL"], PatientPosition="", AcquisitionNumber="", KVP="",
                      RescaleType="HU")
    else:
        common.update(ImageType=["DERIVED", "SECONDARY"], ConversionType="WSD", PatientOrientation="", RescaleType="US")
    common.update(tags or {})
    slices = []
    for k in range(array.shape[0]):
        ds = dicom_dataset(sop_class, common)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = dicom_decimals((affine @ np.array([0.0, 0.0, k, 1.0]))[:3])
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        slices.append(ds)
    return slices


def _int16_pixels(array: np.ndarray, *, round_to_integer: bool) -> tuple[np.ndarray, float, float]:
    """(int16 pixels, slope, intercept) with value = pixel * slope + intercept; rounding/clipping when asked."""
    if round_to_integer:
        return np.clip(np.rint(np.asarray(array, np.float64)), -32768, 32767).astype(np.int16), 1.0, 0.0
    if np.issubdtype(array.dtype, np.integer) and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16), 1.0, 0.0
    values = array.astype(np.float64)
    intercept = float(round((float(values.min()) + float(values.max())) / 2))
    spread = float(np.max(np.abs(values - intercept)))
    slope = spread / 32000.0 if spread > 0 else 1.0
    return np.rint((values - intercept) / slope).astype(np.int16), slope, intercept


def save_dicom_series(slices: list, folder: Path) -> list[Path]:
    """Save :func:`dicom_series` slices into an existing folder as IMG0001.dcm, ... (not atomic: stage the folder)."""
    paths = []
    for k, ds in enumerate(slices):
        paths.append(Path(folder) / f"IMG{k + 1:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths

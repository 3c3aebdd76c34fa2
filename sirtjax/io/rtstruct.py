"""DICOM RT Structure Set export of VOIs for clinical viewers (3D Slicer/SlicerRT, MIM, Eclipse, ...).

:func:`write_rtstruct` writes, into one folder, the CT as a DICOM *CT Image* series (``ct/``, by
:func:`sirtjax.io.dicom_export.dicom_series`, the writer behind ``write_volume`` too) and an RT Structure Set
(``rtstruct.dcm``) whose contours reference those slices. An RT-Struct is bound to the images it
outlines (Frame of Reference UID, SOP Instance UID per slice), so both are written together, with
the same VOIs as a DICOM SEG (``seg.dcm``, :mod:`sirtjax.io.dicomseg`) on those slices; a dose map
given with them becomes ``rtdose.dcm`` (:mod:`sirtjax.io.rtdose`) in the same frame of reference.

Contours: for each VOI (a mask on the CT grid; voxels > 0 are inside) and each slice k of the CT
grid, the iso-line at 0.5 of the binary slice (marching squares, ``contourpy``) gives closed
polygons through the mid-points between inside and outside voxel centres. Polygon vertices are
mapped to patient coordinates (LPS, mm) with the grid's full geometry, so they lie exactly in the
written CT slice planes, also for oblique or left-handed grids and anisotropic spacing. Holes
appear as separate contours inside the outer one; viewers combine the contours of a slice by the
even-odd rule (what :func:`read_rtstruct_masks` does). Approximations: a VOI is represented only
on the CT slices (no inter-slice detail), diagonal-only voxel connections may be cut or joined
(marching squares' saddle rule), and CT values are stored as integer HU (rounded, clipped to int16).
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from pathlib import Path

import contourpy
import numpy as np
import pydicom
from matplotlib.path import Path as PolygonPath
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from sirtjax.errors import InputError
from sirtjax.io.dicom_export import dicom_dataset, dicom_decimals, dicom_series, save_dicom_series
from sirtjax.io.dicomseg import seg_dataset
from sirtjax.outputs import output_dir
from sirtjax.report.colours import voi_colour_rgb
from sirtjax.io.rtdose import rtdose_dataset
from sirtjax.volume import Volume, index_to_world, same_grid

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_ROI_TYPES = ("EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "AVOIDANCE", "ORGAN", "MARKER",
              "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
              "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "")


def slice_contours(mask_2d: np.ndarray) -> list[np.ndarray]:
    """Closed contours (n, 2) in (column, row) voxel-index coordinates around the voxels > 0 of a 2D mask.

    Each polygon lists its vertices once (the closing edge back to the first vertex is implied), corners only: a
    vertex on the straight line through its neighbours is left out (exactly: the vertices lie on a half-voxel
    lattice), which keeps the polygon and drops most of marching squares' points along straight edges.
    An empty or full-free mask gives []; the mask is padded so VOIs touching the border close.
    """
    m = np.pad((np.asarray(mask_2d) > 0).astype(np.float64), 1)
    if not m.any():
        return []
    lines = contourpy.contour_generator(z=m, line_type=contourpy.LineType.Separate).lines(0.5)
    out = []
    for line in lines:
        pts = np.asarray(line, np.float64) - 1.0  # undo the padding
        if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]
        pts = _corners(pts)
        if len(pts) >= 3:
            out.append(pts)
    return out


def _corners(pts: np.ndarray) -> np.ndarray:
    """A closed polygon's vertices (n, 2) without those on the line through their two neighbours."""
    before, after = pts - np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0) - pts
    return pts[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]


def _now() -> tuple[str, str]:
    t = datetime.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def _structure_set(ct: Volume, masks: dict[str, np.ndarray], slices: list[Dataset], common: Mapping,
                   frame_uid: str, roi_types: Mapping[str, str], label: str) -> Dataset:
    ds = dicom_dataset(RT_STRUCTURE_SET_STORAGE, common)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 2
    ds.SeriesDescription = label
    ds.OperatorsName = ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = _now()
    ds.InstanceNumber = 1

    def image_ref(s: Dataset) -> Dataset:
        r = Dataset()
        r.ReferencedSOPClassUID = s.SOPClassUID
        r.ReferencedSOPInstanceUID = s.SOPInstanceUID
        return r

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = slices[0].SeriesInstanceUID
    series_ref.ContourImageSequence = DicomSequence([image_ref(s) for s in slices])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as the standard asks)
    study_ref.ReferencedSOPInstanceUID = common["StudyInstanceUID"]
    study_ref.RTReferencedSeriesSequence = DicomSequence([series_ref])
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = DicomSequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame_ref])

    affine = index_to_world(ct)
    rois, contours, observations = [], [], []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        items = []
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            for poly in slice_contours(mask[k]):
                idx = np.column_stack([poly, np.full(len(poly), float(k)), np.ones(len(poly))])
                world = (idx @ affine.T)[:, :3]
                c = Dataset()
                c.ContourImageSequence = DicomSequence([image_ref(slices[k])])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(world)
                c.ContourData = dicom_decimals(world.ravel())
                items.append(c)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = list(voi_colour_rgb(name))  # the report's colour for this VOI
        if items:
            rc.ContourSequence = DicomSequence(items)
        contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = roi_types.get(name, "ORGAN")
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    return ds


def write_rtstruct(
    ct: Volume,
    vois: Mapping[str, Volume],
    folder: str | Path,
    *,
    patient_name: str = "",
    patient_id: str = "",
    roi_types: Mapping[str, str] | None = None,
    label: str = "sirtjax VOIs",
    dose_gy: Volume | None = None,
    dose_summation: str = "PLAN",
    dose_bits: int = 32,
    given: Collection[str] = (),
) -> Path:
    """Write ``folder/ct/`` (the CT as DICOM CT images, HU), ``folder/rtstruct.dcm`` outlining the VOIs,
    ``folder/seg.dcm`` holding their voxels (unless every VOI is empty) and, given a dose,
    ``folder/rtdose.dcm`` (:func:`sirtjax.io.rtdose.rtdose_dataset`), all in the CT's frame of reference.

    Args:
      ct: the CT Volume (HU), array (z, y, x), any orthonormal direction and spacing.
      vois: ROI name -> mask Volume on the CT grid (voxels > 0 inside; label maps: pass
        ``labels.with_array(labels.array == i)`` per label). An empty mask gives an ROI without contours.
      folder: output folder, written atomically (appears complete or not at all).
      patient_name, patient_id: written into both series (DICOM viewers group by patient).
      roi_types: ROI name -> RT ROI Interpreted Type (e.g. 'GTV' for lesions); default 'ORGAN'.
      label: Structure Set Label (first 16 characters) and series description.
      dose_gy: absorbed dose (Gy) on its own grid (e.g. the SPECT's), in the CT's physical space.
      dose_summation: the RT Dose's Dose Summation Type, 'PLAN' or 'RECORD'.
      dose_bits: the RT Dose's Bits Allocated, 32 or 16.
      given: the VOIs the user supplied (MANUAL segments in the SEG; the others are AUTOMATIC).

    Returns:
      The path of rtstruct.dcm. InputError when a VOI is not on the CT grid, there is no VOI, or
      the dose cannot be stored.
    """
    if not vois:
        raise InputError(folder, "no VOI to export")
    roi_types = dict(roi_types or {})
    for name, t in roi_types.items():
        if t not in _ROI_TYPES:
            raise InputError(folder, f"ROI '{name}': unknown RT ROI Interpreted Type '{t}'")
    masks = {}
    for name, vol in vois.items():
        if not str(name).strip() or len(str(name)) > 64:
            raise InputError(folder, f"ROI name {name!r} must be 1-64 characters")
        if np.asarray(vol.array).shape != ct.shape or not same_grid(vol, ct):
            raise InputError(folder, f"VOI '{name}' is not on the CT grid (resample it with order 0 first)")
        masks[str(name)] = np.asarray(vol.array) > 0
    study_uid, frame_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    date, time = _now()
    # a one-component name ends in a caret (PS3.5 6.2.1.2), so readers do not take it for a family name only
    name = patient_name if not patient_name or "^" in patient_name else patient_name + "^"
    common = {"PatientName": name, "PatientID": patient_id, "PatientBirthDate": "", "PatientSex": "",
              "StudyInstanceUID": study_uid, "StudyDate": date, "StudyTime": time, "ReferringPhysicianName": "",
              "StudyID": "", "AccessionNumber": "", "Manufacturer": "sirtjax",
              "FrameOfReferenceUID": frame_uid, "PositionReferenceIndicator": ""}
    slices = dicom_series(ct, modality="CT", tags={**common, "SeriesInstanceUID": series_uid}, description="sirtjax CT")
    rt = _structure_set(ct, masks, slices, common, frame_uid, roi_types, label)
    seg = seg_dataset(slices, masks, roi_types, given) if any(m.any() for m in masks.values()) else None
    try:
        rtdose = None if dose_gy is None else rtdose_dataset(dose_gy, common, summation=dose_summation,
                                                                  bits=dose_bits)
    except ValueError as exc:
        raise InputError(folder, f"cannot write the RT Dose: {exc}") from None
    out = Path(folder)
    with output_dir(out) as tmp:
        (tmp / "ct").mkdir()
        save_dicom_series(slices, tmp / "ct")
        rt.save_as(tmp / "rtstruct.dcm", enforce_file_format=True)
        if seg is not None:
            seg.save_as(tmp / "seg.dcm", enforce_file_format=True)
        if rtdose is not None:
            rtdose.save_as(tmp / "rtdose.dcm", enforce_file_format=True)
    return out / "rtstruct.dcm"


def read_rtstruct_masks(path: str | Path, reference: Volume) -> dict[str, np.ndarray]:
    """Rasterise every ROI of an RT-Struct onto a reference grid: name -> bool array (z, y, x).

    Contour points (LPS mm) are mapped to the reference's voxel indices; each contour is assigned
    to the nearest slice k and a voxel centre is inside when an odd number of the slice's contours
    of that ROI enclose it (even-odd rule: holes). Contours off the grid are ignored.
    """
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises several types for non-DICOM files
        raise InputError(path, f"cannot read DICOM ({exc})") from None
    if getattr(ds, "SOPClassUID", None) != RT_STRUCTURE_SET_STORAGE:
        raise InputError(path, "not an RT Structure Set")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    to_index = np.linalg.inv(index_to_world(reference))
    nz, ny, nx = reference.shape
    cols, rows = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64))
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    out = {}
    for rc in ds.ROIContourSequence:
        mask = np.zeros(reference.shape, bool)
        for c in getattr(rc, "ContourSequence", []):
            pts = np.asarray(c.ContourData, np.float64).reshape(-1, 3)
            idx = (np.column_stack([pts, np.ones(len(pts))]) @ to_index.T)[:, :3]
            k = int(np.rint(np.mean(idx[:, 2])))
            if 0 <= k < nz:
                inside = PolygonPath(idx[:, :2], closed=False).contains_points(centres).reshape(ny, nx)
                mask[k] ^= inside
        out[names[int(rc.ReferencedROINumber)]] = mask
    return out

"""Writing Volumes atomically: NIfTI (gzip on every core), MHA/NRRD and DICOM series.

Every writer converts the internal convention (LPS, array (z, y, x)) back at this edge. The file (or DICOM folder) is
written under a temporary name in the target folder and renamed into place, so a reader never sees a half-written
output.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from sirtjax.errors import InputError
from sirtjax.io.dicom_export import dicom_series, save_dicom_series
from sirtjax.io.gzip_members import write_gzip
from sirtjax.io.images import ITK_SUFFIXES, NIFTI_SUFFIXES, image_suffix, to_sitk
from sirtjax.io.nifti import to_nifti
from sirtjax.outputs import atomic_path, output_dir
from sirtjax.volume import Volume


def is_dicom_output(path: str | Path) -> bool:
    """True when :func:`write_volume` writes `path` as a DICOM series folder (a path without a suffix)."""
    return image_suffix(Path(path)) == ""


def volume_output_problem(path: str | Path, *, scalar: bool = True) -> str | None:
    """Why :func:`write_volume` cannot write a volume to `path` (None: it can), so that a command refuses the path
    before it computes: an unknown suffix, a detached header, or a DICOM folder (no suffix) for a vector image."""
    suffix = image_suffix(Path(path))
    if suffix in (".mhd", ".nhdr"):
        return "detached-header formats are not written atomically; use .mha or .nrrd"
    if suffix == "" and not scalar:
        return "a vector image cannot be written as a DICOM series; use .nii.gz, .mha or .nrrd"
    if suffix not in NIFTI_SUFFIXES + ITK_SUFFIXES + ("",):
        return f"unknown output format '{suffix}' (use .nii.gz, .mha, .nrrd or a folder for DICOM)"
    return None


def write_volume(vol: Volume, path: str | Path, *, dtype: np.dtype | None = None, dicom_modality: str = "OT",
                 overwrite: bool = False) -> Path:
    """Write a Volume atomically as NIfTI, MHA/NRRD, or (path without suffix) a DICOM series.

    Args:
      vol: the Volume; a 4D array (z, y, x, C) is written as a vector image.
      path: target; the format follows the suffix. A path ending in ``/`` or without suffix is
        written as a DICOM series folder (scalar images only; see :func:`dicom_series`).
      dtype: optional voxel type to cast to before writing (e.g. ``np.uint8`` for masks).
      dicom_modality: DICOM series only: 'CT' writes CT Image Storage (integer HU), anything else
        Secondary Capture with that Modality.
      overwrite: DICOM series only: replace an existing, non-empty folder as a whole (a file is always replaced,
        atomically; callers check for existing outputs first, see :func:`sirtjax.outputs.check_output`).

    Returns:
      The path written.
    """
    p = Path(path)
    array = np.asarray(vol.array)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    vol = Volume(array, vol.spacing_mm, vol.origin_mm, vol.direction)
    if (problem := volume_output_problem(p, scalar=array.ndim == 3)) is not None:
        raise InputError(p, problem)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(p)
    if suffix == ".nii.gz":
        with atomic_path(p, suffix=suffix) as tmp:
            write_gzip(_nifti_bytes(vol), tmp)
    elif suffix == ".nii" and array.ndim == 3:
        with atomic_path(p, suffix=suffix) as tmp:
            nib.save(to_nifti(vol), str(tmp))
    elif suffix:
        with atomic_path(p, suffix=suffix) as tmp:
            sitk.WriteImage(to_sitk(vol), str(tmp), useCompression=True)
    else:
        with output_dir(p, overwrite=overwrite) as staging:
            save_dicom_series(dicom_series(vol, modality=dicom_modality), staging)
    return p


def _nifti_bytes(vol: Volume) -> bytes:
    """The uncompressed NIfTI-1 file of a Volume: nibabel's for a scalar image, ITK's for a vector image (ITK's
    vector layout and LPS components, which its readers expect)."""
    if np.ndim(vol.array) == 3:
        return to_nifti(vol).to_bytes()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sirtjax-nifti-"))) / "vector.nii"
        sitk.WriteImage(to_sitk(vol), str(tmp), useCompression=False)
        return tmp.read_bytes()

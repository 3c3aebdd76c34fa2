"""File formats at the edge: image volumes (NIfTI, MHA/NRRD, DICOM series) in and out, the study manifest, the DICOM
study import from a PACS export, and the DICOM RT objects written for viewers (RT-Struct, SEG, RT Dose).

| module | one idea |
| --- | --- |
| :mod:`~sirtjax.io.images` | read a Volume (NIfTI, MHA/NRRD, DICOM series); SimpleITK conversions |
| :mod:`~sirtjax.io.writing` | write a Volume (NIfTI, MHA/NRRD, DICOM series), atomically |
| :mod:`~sirtjax.io.nifti` | NIfTI header geometry (units, RAS <-> LPS, qform/sform) |
| :mod:`~sirtjax.io.gzip_members` | gzip files compressed on every core |
| :mod:`~sirtjax.io.study` | the study manifest (``study.json``): load and check |
| :mod:`~sirtjax.io.dicom_study` | a PACS export -> series, sessions, roles -> a study folder |
| :mod:`~sirtjax.io.dicom_export` | DICOM datasets and series of a Volume |
| :mod:`~sirtjax.io.rtstruct`, :mod:`~sirtjax.io.dicomseg`, :mod:`~sirtjax.io.rtdose` | RT Structure Set, SEG, RT Dose |

The image functions are importable from here, as before the package existed (``sirtjax.io.read_volume``).
"""

from sirtjax.io.images import (available_memory_bytes, from_sitk, hounsfield_problem, is_volume_path, read_ahead, read_ct,
                               read_dicom_files, read_volume, read_volumes, slice_spacing_problem, to_sitk)
from sirtjax.io.writing import is_dicom_output, volume_output_problem, write_volume

__all__ = ["available_memory_bytes", "from_sitk", "hounsfield_problem", "is_dicom_output", "is_volume_path", "read_ahead",
           "read_ct", "read_dicom_files", "read_volume", "read_volumes", "slice_spacing_problem", "to_sitk",
           "volume_output_problem", "write_volume"]

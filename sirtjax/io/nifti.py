"""NIfTI header geometry to and from the internal convention (LPS millimetres), as ITK reads and writes it.

A header maps voxel (i, j, k) to RAS world coordinates in its spatial units through the sform (or the qform);
sirtjax's Volume holds LPS millimetres with the array transposed to (z, y, x). :mod:`sirtjax.io` reads and writes
the voxels; this module converts the geometry.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from sirtjax.errors import InputError
from sirtjax.volume import Volume, index_to_world

_MM_PER_UNIT = {"meter": 1000.0, "micron": 1e-3}  # a header's spatial units; unknown is read as mm, as ITK does
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry(p: Path, img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing_mm (x, y, z), origin_mm, direction) of a header in LPS millimetres, read as ITK reads them: the sform
    (else the qform), or the qform when the sform is sheared (a gantry tilt), with a warning that says how far their
    voxel positions differ. A sheared header without a qform, or a zero voxel size, is an InputError naming p."""
    sform_mm = _lps_mm(img, img.affine)
    if _sheared(p, sform_mm):
        qform, code = img.header.get_qform(coded=True)
        if not code or _sheared(p, qform):
            raise InputError(p, "the header's affine is sheared (non-orthogonal axes: a gantry tilt?) and it has no qform to fall back on, as ITK does; resample it onto an orthogonal grid")
        qform_mm = _lps_mm(img, qform)
        corners = np.array([[i, j, k, 1.0] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1) for k in (0, img.shape[2] - 1)])
        apart_mm = float(np.max(np.linalg.norm((corners @ (sform_mm - qform_mm).T)[:, :3], axis=1)))
        warnings.warn(f"{p}: the sform is sheared (a gantry tilt?); read with the qform, as ITK does, whose voxel "
                      f"positions differ from the sform's by up to {apart_mm:.1f} mm", stacklevel=4)
        sform_mm = qform_mm
    spacing = np.linalg.norm(sform_mm[:3, :3], axis=0)
    return spacing, sform_mm[:3, 3], _orthonormalise(sform_mm[:3, :3] / spacing)


def to_nifti(vol: Volume) -> nib.Nifti1Image:
    """The Volume as a nibabel NIfTI-1 image (RAS affine, qform and sform both scanner-based)."""
    array = np.transpose(np.asarray(vol.array), (2, 1, 0))
    affine_ras = _LPS_TO_RAS @ index_to_world(vol)
    img = nib.Nifti1Image(array, affine_ras)
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header.set_xyzt_units(xyz="mm")
    return img


def _lps_mm(img: nib.Nifti1Image, affine_ras: np.ndarray) -> np.ndarray:
    """A header's voxel-to-RAS affine in its spatial units as a voxel-to-LPS affine in millimetres."""
    out = _LPS_TO_RAS @ np.asarray(affine_ras, np.float64)
    out[:3] *= _MM_PER_UNIT.get(img.header.get_xyzt_units()[0], 1.0)
    return out


def _sheared(p: Path, affine: np.ndarray) -> bool:
    """Whether a voxel-to-world affine's axes are not orthogonal; a zero voxel size is an InputError naming p."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(p, "the header has a zero voxel size")
    direction = affine[:3, :3] / spacing
    return not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4)


def _orthonormalise(d: np.ndarray) -> np.ndarray:
    """Nearest orthonormal matrix (NIfTI headers store float32, so columns are off by ~1e-7)."""
    u, _, vt = np.linalg.svd(d)
    return u @ vt

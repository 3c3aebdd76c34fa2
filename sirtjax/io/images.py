"""Reading Volumes: NIfTI (nibabel), MHA/NRRD and DICOM series (SimpleITK); the SimpleITK conversions.

Every reader returns a :class:`~sirtjax.volume.Volume` in the internal convention (LPS, array
(z, y, x), ITK-ordered geometry in float64); :mod:`~sirtjax.io.writing` converts back at this edge.

Errors caused by the file (missing, unreadable, not 3D, NaN voxels, sheared geometry without a qform) raise
:class:`~sirtjax.errors.InputError` with the path and the problem in one line; a NIfTI whose sform is sheared is read
with its qform, as ITK reads it, with a warning.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from sirtjax.errors import InputError
from sirtjax.io.nifti import geometry as nifti_geometry
from sirtjax.volume import Volume, make_volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
SLICE_GAP_TOLERANCE = 0.01
"""Largest relative deviation of a DICOM series' slice gaps from their median that is accepted."""

# ITK prints its warnings on the C-level stderr; sirtjax checks what they warn about (missing and
# unevenly spaced DICOM slices, empty folders) itself and says it in one line.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


def image_suffix(path: Path) -> str:
    """The format suffix of an image path, lower case: ``.nii.gz``, ``.nii``, ``.mha``, ...; ``""`` for a folder."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_volume_path(path: str | Path) -> bool:
    """True when the path names a file format or a folder that read_volume understands."""
    p = Path(path)
    return p.is_dir() or image_suffix(p) in NIFTI_SUFFIXES + ITK_SUFFIXES



def read_volume(
    path: str | Path, *, allow_nan: bool = False, vector: bool = False
) -> Volume:
    """Read a 3D image (NIfTI, MHA/NRRD, or a DICOM series folder) as a Volume.

    Args:
      path: a ``.nii``/``.nii.gz``/``.mha``/``.mhd``/``.nrrd``/``.nhdr`` file or a folder holding
        one DICOM series (an RT Dose reads as Gy: its Dose Grid Scaling is applied).
      allow_nan: accept non-finite voxels (otherwise they are an InputError).
      vector: expect a 3-component vector image such as a displacement field; the array is then
        (z, y, x, 3).

    Returns:
      A Volume with the file's voxel type, array (z, y, x) or (z, y, x, 3), LPS geometry.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if p.is_dir():
        vol = _read_dicom_series(p)
    elif image_suffix(p) in NIFTI_SUFFIXES and not vector:
        vol = _read_nifti(p)
    elif image_suffix(p) in NIFTI_SUFFIXES + ITK_SUFFIXES:
        vol = _read_sitk_file(p)
    else:
        raise InputError(p, f"unknown image format '{image_suffix(p) or p.name}' (use NIfTI, MHA, NRRD or a DICOM folder)")
    _check_dimensions(p, vol.array, vector)
    if vol.array.dtype == np.float64:  # scaled NIfTI / rescaled DICOM: float32 is the working type
        vol = vol.with_array(vol.array.astype(np.float32))
    if not allow_nan and np.issubdtype(vol.array.dtype, np.floating):
        bad = int(np.size(vol.array) - np.count_nonzero(np.isfinite(vol.array)))
        if bad:
            raise InputError(p, f"contains {bad} NaN or infinite voxels")
    return vol


def read_ahead(paths: Sequence[str | Path]) -> Callable[[str | Path], Volume]:
    """Start :func:`read_volume` of several files side by side in threads (one per CPU; the decompression and the
    copies release the GIL); returns a reader that gives a file's volume, or raises the error reading it raised,
    when asked for it (one of ``paths``)."""
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    futures = {p: pool.submit(read_volume, p) for p in dict.fromkeys(paths)}
    pool.shutdown(wait=False)
    return lambda p: futures[p].result()


def read_volumes(paths: Sequence[str | Path]) -> list[Volume]:
    """:func:`read_volume` of several files, read side by side (:func:`read_ahead`); the first file's error in the
    given order is raised."""
    read = read_ahead(paths)
    return [read(p) for p in paths]


def read_ct(path: str | Path) -> Volume:
    """:func:`read_volume` of a CT, refused (InputError naming the file) when :func:`hounsfield_problem` finds that
    its values are not Hounsfield units."""
    vol = read_volume(path)
    problem = hounsfield_problem(vol.array)
    if problem is not None:
        raise InputError(path, problem)
    return vol


def hounsfield_problem(array: np.ndarray) -> str | None:
    """Why a CT's values are not Hounsfield units, or None: nothing below -50 with a quarter of the voxels at 700 or
    above is a CT's stored values without the rescale intercept (air at 0, soft tissue near 1024). Approximate: it
    looks for that mistake only, and lets a CT cropped to soft tissue pass."""
    lowest = float(np.min(array))
    if lowest < -50.0:
        return None
    upper_quartile = float(np.percentile(np.asarray(array)[::2, ::2, ::2], 75))
    if upper_quartile < 700.0:
        return None
    return (f"not in Hounsfield units: its lowest value is {lowest:.0f} and a quarter of its voxels lie above {upper_quartile:.0f}, "
            "where a CT in HU has air near -1000 and soft tissue near 0-100; apply the rescale intercept (usually -1024)")


def _check_dimensions(p: Path, array: np.ndarray, vector: bool) -> None:
    want = 4 if vector else 3
    if array.ndim != want or (vector and array.shape[-1] != 3):
        shape = "x".join(str(s) for s in array.shape)
        kind = "a 3D vector image with 3 components" if vector else "a 3D image"
        raise InputError(p, f"expected {kind}, got an array of shape {shape}")
    if min(array.shape[:3]) < 1:
        raise InputError(p, "the image is empty")


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable on Linux, else the physical total)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_memory(p: Path, shape: tuple[int, ...], itemsize: int) -> None:
    """InputError before loading when the voxels (as at least float32) would not fit in available memory."""
    need = int(np.prod(np.asarray(shape, dtype=np.float64))) * max(int(itemsize), 4)
    have = available_memory_bytes()
    if need > have:
        raise InputError(p, f"the image ({'x'.join(map(str, shape))} voxels) needs {need / 2**30:.1f} GiB of memory "
                            f"to load; {have / 2**30:.1f} GiB are available")


def _read_nifti(p: Path) -> Volume:
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(p, f"cannot read NIfTI file ({_short(exc)})") from None
    _check_memory(p, img.shape, img.get_data_dtype().itemsize)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(p, f"cannot read NIfTI file ({_short(exc)})") from None
    # NIfTI may carry trailing singleton dimensions (x, y, z, 1).
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        _check_dimensions(p, data, vector=False)
    spacing, origin, direction = nifti_geometry(p, img)
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    return make_volume(array, spacing, origin, direction)


def _read_sitk_file(p: Path, shown_as: Path | None = None) -> Volume:
    """One image file through SimpleITK; an RT Dose comes back in Gy. Errors name ``shown_as`` (default p)."""
    shown = shown_as or p
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
        _check_memory(shown, (*reader.GetSize(), reader.GetNumberOfComponents()), 4)
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(shown, f"cannot read image ({_short(exc)})") from None
    vol = _from_sitk(shown, img)
    if reader.HasMetaDataKey("0008|0060") and reader.GetMetaData("0008|0060").strip() == "RTDOSE":
        try:  # GDCM returns the stored integers; Dose Grid Scaling (Gy per integer) makes them dose
            scaling = np.float32(reader.GetMetaData("3004|000e"))
        except (RuntimeError, ValueError):
            raise InputError(shown, "the RT Dose has no valid Dose Grid Scaling (3004,000E)") from None
        vol = vol.with_array(np.asarray(vol.array, np.float32) * scaling)
    return vol


def _read_dicom_series(p: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(p))
    except RuntimeError as exc:
        raise InputError(p, f"cannot scan the folder for DICOM files ({_short(exc)})") from None
    if not series:
        raise InputError(p, "the folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(p, f"the folder holds {len(series)} DICOM series; give a folder with one")
    return read_dicom_files(reader.GetGDCMSeriesFileNames(str(p), series[0]), shown_as=p)


def read_dicom_files(files: Sequence[str | Path], *, shown_as: str | Path) -> Volume:
    """One DICOM series from its files (slices in any order, or one multi-frame file) as a Volume.

    The slices must be evenly spaced with none missing (an InputError naming ``shown_as`` otherwise);
    an RT Dose reads as Gy.
    """
    p, files = Path(shown_as), [str(f) for f in files]
    if len(files) == 1:
        first = _dicom_info(p, files[0])
        if first.GetDimension() == 3 and first.GetSize()[2] > 1:  # one file of frames: an RT Dose, an enhanced CT/MR
            return _read_sitk_file(Path(files[0]), shown_as=p)
    slice_size, files = _check_slices(p, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(p, f"cannot read the DICOM series ({_short(exc)})") from None
    if tuple(img.GetSize()) != (*slice_size, len(files)):  # ITK stacks one-row slices along y
        raise InputError(p, f"the series' {len(files)} slices of {slice_size[0]}x{slice_size[1]} voxels read as a "
                            f"{'x'.join(map(str, img.GetSize()))} image; slices this thin are not supported")
    return _from_sitk(p, img)


def _dicom_info(p: Path, name: str) -> sitk.ImageFileReader:
    """A reader that has read the header of one DICOM file of folder p."""
    info = sitk.ImageFileReader()
    info.SetFileName(name)
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(p, f"cannot read the DICOM file {Path(name).name} ({_short(exc)})") from None
    return info


def _check_slices(p: Path, files: list[str]) -> tuple[tuple[int, int], list[str]]:
    """The slices' size (x, y) and the files sorted along the slice normal; InputError unless the
    slices are evenly spaced along their normal and fit in memory."""
    origins, first = [], None
    for name in files:
        info = _dicom_info(p, name)
        first = first or info
        origins.append(info.GetOrigin())
    _check_memory(p, (len(files), *first.GetSize()[:2]), 4)
    size = tuple(first.GetSize()[:2])
    if len(files) < 2:
        return size, files
    normal = np.reshape(first.GetDirection(), (3, 3))[:, 2]
    position = np.asarray(origins) @ normal
    order = np.argsort(position, kind="stable")
    files = [files[i] for i in order]
    if len(files) < 3:
        return size, files
    problem = slice_spacing_problem(position)
    if problem:
        raise InputError(p, f"the DICOM series {problem}")
    return size, files


def slice_spacing_problem(position_mm: Sequence[float]) -> str:
    """What is wrong with slices at these positions along their normal (any order), or "" when
    they are evenly spaced: two at one position, missing slices, or uneven spacing."""
    position = np.sort(np.asarray(position_mm, np.float64))
    if len(position) < 3:
        return ""
    gaps = np.diff(position)
    median = float(np.median(gaps))
    if median <= 0 or np.min(gaps) < 1e-3:
        return "has two slices at the same position"
    if np.max(gaps) > 1.5 * median:
        missing = int(round(float(np.sum(gaps / median - 1))))
        return f"has missing slices (about {missing}; gaps of {median:.2f} to {np.max(gaps):.2f} mm)"
    if np.max(np.abs(gaps - median)) > SLICE_GAP_TOLERANCE * median:
        return f"has uneven slice spacing (gaps of {np.min(gaps):.2f} to {np.max(gaps):.2f} mm)"
    return ""


def _from_sitk(p: Path, img: sitk.Image) -> Volume:
    if img.GetDimension() != 3:
        raise InputError(p, f"expected a 3D image, got a {img.GetDimension()}D image")
    array = sitk.GetArrayFromImage(img)
    try:
        return make_volume(array, img.GetSpacing(), img.GetOrigin(), np.reshape(img.GetDirection(), (3, 3)))
    except ValueError as exc:
        raise InputError(p, str(exc)) from None


def to_sitk(vol: Volume) -> sitk.Image:
    """The Volume as a SimpleITK image (a vector image when the array has a channel axis)."""
    array = np.asarray(vol.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    img = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    img.SetSpacing(tuple(float(s) for s in np.asarray(vol.spacing_mm)))
    img.SetOrigin(tuple(float(s) for s in np.asarray(vol.origin_mm)))
    img.SetDirection(tuple(float(s) for s in np.asarray(vol.direction).ravel()))
    return img


def from_sitk(img: sitk.Image) -> Volume:
    """A Volume from a SimpleITK image (geometry copied exactly)."""
    return _from_sitk(Path("<SimpleITK image>"), img)


def _short(exc: BaseException) -> str:
    """First meaningful line of an exception message (ITK messages span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln or "ERROR" in ln.upper():
            return ln.split("Description:")[-1].strip()[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]

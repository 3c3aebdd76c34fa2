"""Geometry survives every I/O path: SimpleITK, nibabel and sirtjax agree on world coordinates."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from sirtjax import io
from sirtjax.errors import InputError
from sirtjax.outputs import output_dir
from sirtjax.volume import corner_points_world, make_volume

OBLIQUE = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
LEFT_HANDED = np.diag([-1.0, -1.0, 1.0]) @ Rotation.from_euler("z", 12, degrees=True).as_matrix() @ np.diag([1.0, 1.0, -1.0])
SPACING = (0.7, 1.3, 3.1)
ORIGIN = (-123.456, 78.9, -301.25)
IDX_CORNERS = [(i, j, k) for k in (0, 6) for j in (0, 8) for i in (0, 10)]


def _sitk_image(direction: np.ndarray, dtype=np.float32) -> sitk.Image:
    arr = (np.random.default_rng(0).normal(size=(7, 9, 11)) * 100).astype(dtype)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(direction.ravel().tolist())
    return img


def _sitk_corners(img: sitk.Image) -> np.ndarray:
    return np.array([img.TransformIndexToPhysicalPoint(ix) for ix in IDX_CORNERS])


def _nib_corners(path) -> np.ndarray:
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib.load(str(path)).affine  # RAS -> LPS
    return np.array([(aff @ np.array([*ix, 1.0]))[:3] for ix in IDX_CORNERS])


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, LEFT_HANDED], ids=["identity", "oblique", "left-handed"])
def test_sitk_to_sirtjax_to_nifti_keeps_world_corners(tmp_path, direction):
    src = _sitk_image(direction)
    sitk.WriteImage(src, str(tmp_path / "src.mha"))
    vol = io.read_volume(tmp_path / "src.mha")
    io.write_volume(vol, tmp_path / "out.nii.gz")
    truth = _sitk_corners(src)
    # NIfTI stores the affine in float32: 1e-4 mm is the requirement, float32 gives ~3e-5 at 300 mm.
    np.testing.assert_allclose(corner_points_world(vol), truth, atol=1e-4)
    np.testing.assert_allclose(_sitk_corners(sitk.ReadImage(str(tmp_path / "out.nii.gz"))), truth, atol=1e-4)
    np.testing.assert_allclose(_nib_corners(tmp_path / "out.nii.gz"), truth, atol=1e-4)
    again = io.read_volume(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(corner_points_world(again), truth, atol=1e-4)
    np.testing.assert_array_equal(again.array, sitk.GetArrayFromImage(src))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz"))), again.array)


@pytest.mark.parametrize("units, mm_per_unit", [("mm", 1.0), ("unknown", 1.0), ("meter", 1000.0), ("micron", 1e-3)])
def test_nifti_written_by_nibabel_reads_like_sitk(tmp_path, units, mm_per_unit):
    """Whatever the header's spatial unit, the geometry in mm is ITK's (a unit of 'unknown' is read as mm)."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # nibabel order (x, y, z)
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, 1.0, 1.0]) @ OBLIQUE @ np.diag([2.0, 0.8, 3.5]) / mm_per_unit
    aff[:3, 3] = np.array([10.0, -20.0, 33.3]) / mm_per_unit
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units(xyz=units)
    nib.save(img, str(tmp_path / "n.nii"))
    vol = io.read_volume(tmp_path / "n.nii")
    ref = sitk.ReadImage(str(tmp_path / "n.nii"))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.spacing_mm, ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(vol.spacing_mm, [2.0, 0.8, 3.5], rtol=1e-6)
    np.testing.assert_allclose(vol.origin_mm, ref.GetOrigin(), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(vol.direction.ravel(), ref.GetDirection(), atol=1e-5)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii"])
def test_roundtrip_formats_exact(tmp_path, suffix):
    vol = make_volume(np.random.default_rng(1).integers(0, 5, (5, 6, 7)).astype(np.uint8), SPACING, ORIGIN, OBLIQUE)
    io.write_volume(vol, tmp_path / f"v{suffix}")
    back = io.read_volume(tmp_path / f"v{suffix}")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(corner_points_world(back), corner_points_world(vol), atol=1e-4)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_dicom_series_roundtrip(tmp_path, dtype):
    vol = make_volume((np.random.default_rng(2).normal(size=(6, 8, 9)) * 300).astype(dtype), SPACING, ORIGIN, OBLIQUE)
    io.write_volume(vol, tmp_path / "series")
    assert len(os.listdir(tmp_path / "series")) == 6
    back = io.read_volume(tmp_path / "series")
    np.testing.assert_allclose(corner_points_world(back), corner_points_world(vol), atol=1e-4)
    # floats are stored as int16 with a rescale slope: quantisation step = range / 64000.
    np.testing.assert_allclose(back.array, vol.array, atol=float(np.ptp(vol.array)) / 64000 + 1e-6)
    assert back.array.dtype != np.float64


def test_vector_image_roundtrip_as_displacement(tmp_path):
    field = np.random.default_rng(3).normal(size=(5, 6, 7, 3)).astype(np.float32)
    vol = make_volume(field, SPACING, ORIGIN, OBLIQUE)
    io.write_volume(vol, tmp_path / "u.nii.gz")
    img = sitk.ReadImage(str(tmp_path / "u.nii.gz"), sitk.sitkVectorFloat64)
    assert img.GetNumberOfComponentsPerPixel() == 3
    sitk.DisplacementFieldTransform(img)  # SimpleITK accepts it as a displacement field
    back = io.read_volume(tmp_path / "u.nii.gz", vector=True)
    np.testing.assert_allclose(back.array, field, atol=1e-6)
    np.testing.assert_allclose(corner_points_world(back), corner_points_world(vol), atol=1e-4)


def test_trailing_singleton_dimension_is_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), np.eye(4)), str(tmp_path / "t.nii.gz"))
    assert io.read_volume(tmp_path / "t.nii.gz").shape == (6, 5, 4)


def test_a_sheared_sform_is_read_through_the_qform_as_simpleitk_reads_it(tmp_path):
    """A gantry-tilted CT's NIfTI: its sform shears y with z, its qform is the rotated, untilted grid. sirtjax reads it
    as SimpleITK does (the qform), and warns, naming the file and how far the two place the voxels apart."""
    data = np.arange(20 * 30 * 10, dtype=np.int16).reshape(20, 30, 10)
    qform = np.eye(4)
    qform[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix() @ np.diag([0.8, 0.7, 3.0])
    qform[:3, 3] = (-10.0, 20.0, -30.0)
    sform = qform.copy()
    sform[1, 2] += 3.0 * np.tan(np.radians(15.0))  # y moves 0.8 mm per slice
    img = nib.Nifti1Image(data, sform)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=1)
    path = tmp_path / "tilted.nii.gz"
    nib.save(img, str(path))
    with pytest.warns(UserWarning, match=r"tilted.nii.gz: the sform is sheared .* by up to 7\.2 "):
        vol = io.read_volume(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(np.asarray(vol.array), sitk.GetArrayFromImage(ref))
    for ours, theirs in ((vol.spacing_mm, ref.GetSpacing()), (vol.origin_mm, ref.GetOrigin()), (np.ravel(vol.direction), ref.GetDirection())):
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(p)), "3D image"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(p)), "3D image"),
        (lambda p: nib.save(nib.Nifti1Image(np.full((4, 5, 6), np.nan, np.float32), np.eye(4)), str(p)), "NaN"),
        (lambda p: p.write_bytes(gzip.compress(b"this is not a nifti file")), "cannot read"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])), str(p)), "no qform"),
    ],
    ids=["2d", "4d", "nan", "garbage", "sheared"],
)
def test_bad_files_raise_one_line_input_error(tmp_path, make, problem):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError) as err:
        io.read_volume(path)
    assert str(path) in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        io.read_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unknown image format"):
        io.read_volume(tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        io.read_volume(tmp_path / "empty")


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path):
    vol = make_volume(np.ones((3, 4, 5), np.float32))
    io.write_volume(vol, tmp_path / "a.nii.gz")
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.nii.gz").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(InputError):
        io.write_volume(vol, tmp_path / "a.png")
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"]


def test_output_dir_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "out") as staging:
            (staging / "first.txt").write_text("half")
            raise RuntimeError("failure in the middle of a command")
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == []
    with output_dir(tmp_path / "out") as staging:
        (staging / "first.txt").write_text("whole")
    assert (tmp_path / "out" / "first.txt").read_text() == "whole"
    assert os.listdir(tmp_path) == ["out"]


def _abdomen_hu(rng: np.random.Generator) -> np.ndarray:
    """A crude CT slab in HU: an elliptical body (fat rim at -100, soft tissue at 50, a 400 HU spine) in air, 20 HU noise."""
    _, y, x = np.meshgrid(np.arange(16), np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    r = np.hypot(x / 0.9, y / 0.7)
    image = np.select([r > 1.0, r > 0.9, np.hypot(x, y - 0.45) < 0.12], [-1000.0, -100.0, 400.0], 50.0)
    return (image + rng.normal(0.0, 20.0, image.shape)).astype(np.float32)


def test_hounsfield_problem_finds_stored_values_and_passes_hu():
    """A CT without its rescale intercept (air at 0) is refused, naming both numbers; a CT in HU passes with its air,
    with -3024 padding outside the reconstruction circle, and cropped to soft tissue with no air at all."""
    hu = _abdomen_hu(np.random.default_rng(0))
    stored = np.clip(hu + 1024.0, 0.0, None)
    problem = io.hounsfield_problem(stored)
    assert problem is not None and "not in Hounsfield units" in problem and "lowest value is 0" in problem
    padded = np.where(np.hypot(*np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")) > 1.0, -3024.0, hu)
    for image in (hu, padded, hu[:, 20:44, 20:44]):
        assert io.hounsfield_problem(image) is None


def test_read_ct_refuses_stored_values_naming_the_file(tmp_path):
    """read_ct reads a CT in HU and refuses one of stored values with an InputError that names the file."""
    hu = _abdomen_hu(np.random.default_rng(1))
    good = io.write_volume(make_volume(hu, (0.8, 0.8, 5.0), (0.0, 0.0, 0.0), np.eye(3)), tmp_path / "hu.nii.gz")
    bad = io.write_volume(make_volume(np.clip(hu + 1024.0, 0.0, None), (0.8, 0.8, 5.0), (0.0, 0.0, 0.0), np.eye(3)), tmp_path / "stored.nii.gz")
    assert io.read_ct(good).shape == hu.shape
    with pytest.raises(InputError, match="stored.nii.gz.*not in Hounsfield units"):
        io.read_ct(bad)


def test_centroid_matches_simpleitk_label_statistics_on_an_oblique_anisotropic_grid():
    """centroid_mm of a mask is the world centroid SimpleITK's LabelShapeStatistics gives, on a rotated grid with
    anisotropic spacing; an empty mask gives the grid's centre."""
    from sirtjax.volume import centroid_mm

    rng = np.random.default_rng(3)
    mask = np.zeros((9, 12, 15), np.uint8)
    mask[2:6, 3:10, 4:7] = 1
    mask[rng.random(mask.shape) > 0.9] = 1
    direction = Rotation.from_euler("xyz", [20, -15, 35], degrees=True).as_matrix()
    vol = make_volume(mask, (0.8, 1.3, 2.5), (-30.0, 12.0, 101.0), direction)
    image = io.to_sitk(vol)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(image)
    np.testing.assert_allclose(centroid_mm(vol, mask), stats.GetCentroid(1), atol=1e-9)
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    np.testing.assert_allclose(centroid_mm(vol, np.zeros_like(mask)), centre, atol=1e-9)


def test_nifti_gz_is_compressed_in_members_that_every_reader_reads_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr(io.gzip_members, "GZIP_MEMBER_BYTES", 1000)  # many members on a small image
    rng = np.random.default_rng(4)
    scalar = make_volume(rng.normal(size=(10, 11, 12)).astype(np.float32), SPACING, ORIGIN, OBLIQUE)
    vector = make_volume(rng.normal(size=(10, 11, 12, 3)).astype(np.float32), SPACING, ORIGIN, OBLIQUE)
    for name, vol in (("s.nii.gz", scalar), ("v.nii.gz", vector)):
        io.write_volume(vol, tmp_path / name)
        raw = (tmp_path / name).read_bytes()
        assert raw.count(b"\x1f\x8b\x08") > 2  # several gzip members
        img = sitk.ReadImage(str(tmp_path / name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), np.asarray(vol.array))
        np.testing.assert_allclose(img.GetOrigin(), ORIGIN, atol=1e-5)
        np.testing.assert_allclose(np.asarray(img.GetDirection()).reshape(3, 3), OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(io.read_volume(tmp_path / "s.nii.gz").array, scalar.array)  # nibabel's reader
    assert gzip.decompress(raw) == io.writing._nifti_bytes(vector)  # python's gzip reads every member


def test_rms_radius_about_the_centroid_matches_simpleitk_principal_moments():
    """The affine start's radius (registration.init.rms_radius_mm, from index moments) about a mask's centroid is
    the root of the trace of its physical covariance: the sum of SimpleITK's principal moments, on an oblique grid."""
    from sirtjax.registration.init import rms_radius_mm
    from sirtjax.volume import centroid_mm

    rng = np.random.default_rng(5)
    mask = (rng.random((9, 12, 15)) > 0.6).astype(np.uint8)
    direction = Rotation.from_euler("xyz", [-25, 40, 15], degrees=True).as_matrix()
    vol = make_volume(mask, (0.8, 1.3, 2.5), (-30.0, 12.0, 101.0), direction)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(io.to_sitk(vol))
    centre = centroid_mm(vol, mask)
    assert rms_radius_mm(vol, mask, centre) == pytest.approx(np.sqrt(np.sum(stats.GetPrincipalMoments(1))), rel=1e-9)
    shifted = centre + np.array([3.0, -4.0, 12.0])  # about another point: the offset adds in quadrature
    assert rms_radius_mm(vol, mask, shifted) == pytest.approx(np.sqrt(np.sum(stats.GetPrincipalMoments(1)) + 169.0), rel=1e-9)

"""Jacobian determinant statistics against SimpleITK and analytic affine fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from sirtjax.io import to_sitk
from sirtjax.metrics import jacobian_determinant, jacobian_stats
from sirtjax.volume import make_volume, world_grid

SPACING = (0.9, 1.4, 2.2)
ROTATED = Rotation.from_euler("xyz", [25, -40, 65], degrees=True).as_matrix()


def smooth_field(seed, shape=(12, 14, 16), amplitude_mm=3.0):
    u = np.random.default_rng(seed).normal(size=(*shape, 3))
    u = np.stack([ndimage.gaussian_filter(u[..., c], 1.5) for c in range(3)], -1)
    return (amplitude_mm * u / np.abs(u).max()).astype(np.float32)


def test_determinant_matches_simpleitk_on_identity_direction():
    field = make_volume(smooth_field(0), SPACING, (3.0, -7.0, 11.0))
    ours = np.asarray(jacobian_determinant(field))
    ref = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(to_sitk(field), True))
    assert (ours <= 0).any() and (ours > 1.5).any()  # the field folds and stretches
    # ITK uses zero-flux edges (a halved one-sided difference), so compare interior voxels only;
    # float32 central differences of mm values against ITK's float64.
    np.testing.assert_allclose(ours[1:-1, 1:-1, 1:-1], ref[1:-1, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_simpleitk_ignores_direction_and_we_do_not():
    # Documents why the direction case is checked analytically below, not against ITK.
    field = make_volume(smooth_field(1), SPACING, (0.0, 0.0, 0.0), ROTATED)
    flat = make_volume(smooth_field(1), SPACING)
    itk_rot = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(to_sitk(field), True))
    itk_flat = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(to_sitk(flat), True))
    np.testing.assert_array_equal(itk_rot, itk_flat)
    assert np.abs(np.asarray(jacobian_determinant(field)) - np.asarray(jacobian_determinant(flat))).max() > 0.1


@pytest.mark.parametrize("direction", [np.eye(3), ROTATED, np.diag([-1.0, -1.0, 1.0])])
def test_affine_field_has_the_affine_determinant_on_any_grid(direction):
    # u(p) = (A - I)(p - c): p -> p + u(p) is affine with Jacobian A, so det = det(A) at every
    # voxel (edges too: one-sided differences of a linear field are exact).
    a = np.array([[1.10, 0.15, -0.05], [0.08, 0.92, 0.12], [-0.10, 0.05, 1.20]])
    vol = make_volume(np.zeros((9, 10, 11), np.float32), SPACING, (120.0, -80.0, 40.0), direction)
    p = np.asarray(world_grid(vol), np.float64)
    u = ((p - p.mean(axis=(0, 1, 2))) @ (a - np.eye(3)).T).astype(np.float32)
    field = vol.with_array(u)
    det = np.asarray(jacobian_determinant(field))
    # float32 displacements of up to ~10 mm over >= 0.9 mm voxels.
    np.testing.assert_allclose(det, np.linalg.det(a), atol=2e-5)
    stats = jacobian_stats(field).to_dict()
    assert stats["fraction_nonpositive"] == 0.0
    assert stats["mean"] == pytest.approx(np.linalg.det(a), abs=2e-5)
    assert stats["std_log"] == pytest.approx(0.0, abs=1e-4)


def test_stats_match_numpy_within_a_mask_jit_and_vmap():
    field = make_volume(smooth_field(2, amplitude_mm=6.0), SPACING)
    det = np.asarray(jacobian_determinant(field), np.float64)
    mask = np.zeros(det.shape, bool)
    mask[2:9, 3:12, 1:15] = True
    d = det[mask]
    pos = d[d > 0]
    expected = {
        "fraction_nonpositive": (d <= 0).mean(),
        "mean": d.mean(),
        "std_log": np.log(pos).std(),
        "min": d.min(),
        "max": d.max(),
        "n_voxels": mask.sum(),
    }
    eager = jacobian_stats(field, mask).to_dict()
    jitted = jax.jit(jacobian_stats)(field, jnp.asarray(mask)).to_dict()
    for key, value in expected.items():
        assert eager[key] == pytest.approx(value, rel=1e-5, abs=1e-6)  # float32 sums
        assert jitted[key] == pytest.approx(eager[key], rel=1e-6, abs=1e-6)
    assert 0 < eager["fraction_nonpositive"] < 1
    batch = jnp.stack([smooth_field(s) for s in (3, 4)])
    vmapped = jax.vmap(lambda u: jacobian_stats(field.with_array(u)))(batch)
    for i, s in enumerate((3, 4)):
        single = jacobian_stats(field.with_array(smooth_field(s)))
        np.testing.assert_allclose(vmapped.std_log[i], single.std_log, rtol=1e-6)
        np.testing.assert_allclose(vmapped.fraction_nonpositive[i], single.fraction_nonpositive, rtol=1e-6)


def test_empty_mask_and_fully_folded_field_are_defined():
    field = make_volume(smooth_field(5), SPACING)
    empty = jacobian_stats(field, np.zeros(field.shape, bool)).to_dict()
    assert empty == {"fraction_nonpositive": 0.0, "mean": 1.0, "std_log": 0.0, "min": 1.0, "max": 1.0, "n_voxels": 0}
    # u(p) = -2 p along x mirrors the grid: det = -1 everywhere, no positive determinant.
    p = np.asarray(world_grid(field))
    mirror = np.zeros_like(p)
    mirror[..., 0] = -2.0 * p[..., 0]
    stats = jacobian_stats(field.with_array(mirror)).to_dict()
    assert stats["fraction_nonpositive"] == 1.0 and stats["std_log"] == 0.0
    assert stats["mean"] == pytest.approx(-1.0, abs=1e-5)


def test_single_slice_field_has_zero_derivative_across_the_slice():
    u = smooth_field(6, shape=(1, 14, 16))
    u[..., 2] = 0.0
    field = make_volume(u, SPACING)
    ref = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(to_sitk(field), True))
    np.testing.assert_allclose(np.asarray(jacobian_determinant(field))[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", [np.eye(3), ROTATED])
def test_padded_field_with_its_true_size_has_the_unpadded_determinants(direction):
    u = smooth_field(6, shape=(7, 9, 11), amplitude_mm=4.0)
    field = make_volume(u, SPACING, direction=direction)
    padded = np.random.default_rng(0).normal(size=(12, 16, 16, 3)).astype(np.float32)  # garbage past the true size
    padded[:7, :9, :11] = u
    big = make_volume(padded, SPACING, direction=direction)
    det = jacobian_determinant(big, jnp.asarray([7, 9, 11], jnp.int32))
    np.testing.assert_allclose(np.asarray(det)[:7, :9, :11], np.asarray(jacobian_determinant(field)), rtol=1e-5, atol=1e-6)


def test_registration_checks_on_a_padded_field_equal_the_stats_of_the_field():
    from sirtjax.registration.guided import jacobian_checks

    field = make_volume(smooth_field(7, shape=(11, 13, 17), amplitude_mm=6.0), SPACING, direction=ROTATED)
    liver = np.zeros(field.shape, bool)
    liver[2:8, 3:10, 4:12] = True
    whole, in_liver = jacobian_checks(field, liver)
    for got, want in ((whole, jacobian_stats(field).to_dict()), (in_liver, jacobian_stats(field, liver).to_dict())):
        assert got["n_voxels"] == want["n_voxels"]
        for key in ("fraction_nonpositive", "mean", "std_log", "min", "max"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6)

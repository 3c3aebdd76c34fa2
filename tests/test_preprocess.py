"""Resampling agrees with SimpleITK's ResampleImageFilter; windowing and cropping keep geometry."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from sirtjax import io, preprocess
from sirtjax.volume import corner_points_world, make_grid, make_volume, same_grid, world_grid

ROT_A = Rotation.from_euler("xyz", [10, -5, 30], degrees=True).as_matrix()
ROT_B = Rotation.from_euler("xyz", [-15, 20, 5], degrees=True).as_matrix()
FLIP = np.diag([-1.0, -1.0, 1.0])


def _sitk_resample(moving, reference, interpolator, default):
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(io.to_sitk(reference))
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(f.Execute(io.to_sitk(moving)))


@pytest.mark.parametrize("dir_moving, dir_ref", [(np.eye(3), np.eye(3)), (ROT_A, ROT_B), (FLIP, ROT_A), (FLIP, FLIP), (FLIP, np.eye(3))])
@pytest.mark.parametrize("order", [1, 0])
def test_resample_to_matches_simpleitk(dir_moving, dir_ref, order):
    """Oblique pairs go through the 8-corner gather, axis-aligned ones (flipped too) through the separable passes."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 14, 16)).astype(np.float32) if order else rng.integers(0, 6, (12, 14, 16)).astype(np.int16)
    moving = make_volume(data, (1.5, 1.0, 2.5), (-10, 5, -20), dir_moving)
    reference = make_volume(np.zeros((15, 13, 17), np.uint8), (1.2, 1.7, 2.0), (-12, 0, -22), dir_ref)
    ours = preprocess.resample_to(moving, reference, order=order, default_value=-7)
    ref = _sitk_resample(moving, reference, sitk.sitkLinear if order else sitk.sitkNearestNeighbor, -7)
    assert (ref == -7).sum() > 0  # the test covers points outside the moving image too
    # float32 trilinear weights: a few 1e-6 differences; nearest is exact.
    np.testing.assert_allclose(np.asarray(ours.array), ref, atol=1e-4 if order else 0)
    if order == 0:
        assert ours.array.dtype == data.dtype
    np.testing.assert_allclose(corner_points_world(ours), corner_points_world(reference), atol=1e-9)


@pytest.mark.parametrize("order", [1, 0])
def test_a_point_on_the_far_face_is_outside_as_in_simpleitk(order):
    """Output voxels at continuous index exactly -0.5 and n - 0.5 of the input: ITK keeps the first, not the second."""
    moving = make_volume(np.ones((4, 4, 4), np.float32), (1.0, 1.0, 1.0))
    for origin_x in (-0.5, 0.5):
        reference = make_volume(np.zeros((4, 4, 4), np.float32), (1.0, 1.0, 1.0), (origin_x, 0.0, 0.0))
        ours = np.asarray(preprocess.resample_to(moving, reference, order=order, default_value=-7).array)
        ref = _sitk_resample(moving, reference, sitk.sitkLinear if order else sitk.sitkNearestNeighbor, -7)
        np.testing.assert_array_equal(ours, ref)
        assert (ours == -7).any() == (origin_x > 0)


def test_gaussian_kernel_is_scipys():
    """The kernel fused into the separable passes is scipy's gaussian_filter1d impulse response (radius, weights)."""
    from scipy import ndimage

    from sirtjax.interpolate import gaussian_kernel_1d

    for sigma in (0.0, 0.1, 0.4, 0.625, 1.2, 3.3):
        kernel = gaussian_kernel_1d(sigma)
        impulse = np.zeros(41)
        impulse[20] = 1.0
        response = ndimage.gaussian_filter1d(impulse, sigma) if sigma else impulse
        np.testing.assert_allclose(response[20 - len(kernel) // 2:21 + len(kernel) // 2], kernel, atol=1e-15)
        assert np.count_nonzero(response) == len(kernel)


@pytest.mark.parametrize("direction", [np.eye(3), FLIP])
def test_separable_resampling_equals_the_corner_gather(direction):
    """Up- and down-sampling between axis-aligned grids of anisotropic spacing, partly outside, with and without
    anti-aliasing: the separable passes give scipy's Gaussian then the 8-corner gather's values to float32 rounding,
    and the same inside/outside decision."""
    from scipy import ndimage

    from sirtjax.interpolate import axis_aligned, resample_separable
    from sirtjax.volume import index_to_world, world_to_index

    rng = np.random.default_rng(1)
    moving = make_volume(rng.normal(size=(20, 24, 28)).astype(np.float32) * 100, (2.0, 3.0, 4.5), (-30, 10, -40), direction)
    cases = (((0.7, 0.9, 1.3), (90, 70, 80), (0.0, 0.0, 0.0)), ((5.0, 4.0, 6.0), (14, 20, 13), (0.75, 0.4, 0.8)),
             ((9.0, 3.0, 2.0), (8, 24, 30), (0.0, 0.0, 1.8)))
    for spacing, shape, sigma_zyx in cases:
        reference = make_grid(shape, spacing, (-35, 5, -45), direction)
        index_map = world_to_index(moving) @ index_to_world(reference)
        assert axis_aligned(index_map) and not axis_aligned(world_to_index(moving) @ index_to_world(make_grid(shape, spacing, (0, 0, 0), ROT_A)))
        ours = np.asarray(resample_separable(moving.array, index_map, reference.shape, -7.0, sigma_zyx))
        smoothed = moving.with_array(ndimage.gaussian_filter(np.asarray(moving.array), sigma_zyx, mode="nearest"))
        gather = np.asarray(preprocess._resample(smoothed, reference, 1, -7.0))
        assert 0 < (gather == -7.0).sum() < gather.size
        np.testing.assert_allclose(ours, gather, atol=2e-3)  # values of +-300: float32 indices of the gather
        via = preprocess.resample_to(moving, reference, smooth_vox_zyx=sigma_zyx)  # resample_to takes this path
        np.testing.assert_array_equal(np.asarray(via.array), np.where(ours == -7.0, 0.0, ours))
    oblique = make_grid((14, 20, 13), (5.0, 4.0, 6.0), (-35, 5, -45), ROT_A)  # not aligned: scipy, then the gather
    np.testing.assert_allclose(np.asarray(preprocess.resample_to(moving, oblique, smooth_vox_zyx=(0.75, 0.4, 0.8)).array),
                               np.asarray(preprocess._resample(moving.with_array(ndimage.gaussian_filter(
                                   np.asarray(moving.array), (0.75, 0.4, 0.8), mode="nearest")), oblique, 1, 0.0)), atol=1e-4)
    with pytest.raises(ValueError, match="order 1"):
        preprocess.resample_to(moving, oblique, order=0, smooth_vox_zyx=(1.0, 0.0, 0.0))


@pytest.mark.parametrize("direction", [np.eye(3), FLIP])
def test_resample_to_through_a_program_cache_gives_the_same_values(direction, tmp_path):
    """With a ProgramCache, arrays padded to bucket shapes (the separable passes' taps too) give resample_to's values on
    both paths (separable with anti-aliasing, oblique gather of images and of labels), and a grid of the same buckets
    reuses the program."""
    from sirtjax.programs import ProgramCache

    rng = np.random.default_rng(2)
    moving = make_volume(rng.normal(size=(20, 24, 28)).astype(np.float32) * 100, (2.0, 3.0, 4.5), (-30, 10, -40), direction)
    labels = moving.with_array((np.asarray(moving.array) > 50).astype(np.uint8) * 4)
    programs = ProgramCache(tmp_path)
    aligned = make_grid((36, 50, 40), (1.5, 2.0, 3.0), (-35, 5, -45), direction)
    oblique = make_grid((14, 20, 13), (5.0, 4.0, 6.0), (-35, 5, -45), ROT_A)
    for vol, grid, kw in ((moving, aligned, dict(smooth_vox_zyx=(0.75, 0.4, 0.8), default_value=-7.0)),
                          (moving, oblique, dict(default_value=-7.0)), (labels, oblique, dict(order=0))):
        want = preprocess.resample_to(vol, grid, **kw)
        got = preprocess.resample_to(vol, grid, programs=programs, **kw)
        assert got.array.dtype == want.array.dtype and got.shape == grid.shape
        np.testing.assert_allclose(np.asarray(got.array), np.asarray(want.array), atol=2e-3)  # +-300: float32 indices
        assert 0 < np.mean(np.asarray(want.array) == kw.get("default_value", 0.0)) < 1  # partly outside
    held = len(programs._loaded)
    near = make_grid((35, 49, 38), (1.5, 2.0, 3.0), (-35, 5, -45), direction)  # the same buckets
    smooth = dict(smooth_vox_zyx=(0.75, 0.4, 0.8))
    np.testing.assert_allclose(np.asarray(preprocess.resample_to(moving, near, programs=programs, **smooth).array),
                               np.asarray(preprocess.resample_to(moving, near, **smooth).array), atol=2e-3)
    assert len(programs._loaded) == held


def test_sample_world_is_differentiable_in_points():
    vol = make_volume(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7), (2.0, 1.0, 0.5))
    # array value = 42 z + 7 y + x = 42 (k) + 7 (j) + i; world x = 2 i, y = j, z = 0.5 k
    grad = jax.grad(lambda p: preprocess.sample_world(vol, p).sum())(jnp.array([[3.1, 2.2, 1.3]]))
    np.testing.assert_allclose(grad[0], [1 / 2.0, 7 / 1.0, 42 / 0.5], rtol=1e-5)


def test_world_grid_matches_simpleitk_points():
    vol = make_volume(np.zeros((3, 4, 5), np.float32), (0.9, 1.1, 2.7), (5, -3, 12), ROT_A)
    img = io.to_sitk(vol)
    grid = np.asarray(world_grid(vol))
    for k, j, i in [(0, 0, 0), (2, 3, 4), (1, 2, 0)]:
        np.testing.assert_allclose(grid[k, j, i], img.TransformIndexToPhysicalPoint((i, j, k)), atol=1e-4)


def test_resample_to_spacing_keeps_field_of_view():
    vol = make_volume(np.ones((10, 20, 30), np.float32), (1.0, 1.0, 3.0), (0, 0, 0), ROT_B)
    out = preprocess.resample_to_spacing(vol, (3.0, 2.0, 3.0))
    assert out.shape == (10, 10, 10)
    extent_in = np.asarray(vol.size_xyz) * np.asarray(vol.spacing_mm)
    extent_out = np.asarray(out.size_xyz) * np.asarray(out.spacing_mm)
    np.testing.assert_allclose(extent_out, extent_in)
    np.testing.assert_allclose(np.asarray(out.array), 1.0, rtol=1e-6)  # inside the old grid; float32 weights


def test_windows_follow_the_thesis():
    np.testing.assert_allclose(preprocess.window_ct(jnp.array([-1000.0, -200.0, 0.0, 200.0, 900.0])), [-0.5, -0.5, 0.0, 0.5, 0.5])
    mr = preprocess.window_mr(jnp.array([10.0, 50.0, 90.0, 110.0]))
    np.testing.assert_allclose(mr, [-0.5, 0.0, 0.5, 0.5], atol=1e-6)  # 80 % of the range is 90


def test_padding_far_below_the_image_is_lifted_and_measured_lows_are_not():
    """-32768 around an MR (a conversion's padding) is lifted to the MR's own lowest value, so its window is the one
    without padding; an MR's background of 0 under a noiseless body keeps it, and a CT's noisy air or soft tissue and
    fat under -3024 padding are found under it."""
    rng = np.random.default_rng(3)
    body = np.where(rng.random((12, 30, 30)) < 0.5, 400.0, 800.0) + rng.normal(0.0, 20.0, (12, 30, 30))
    mr = np.concatenate([np.abs(rng.normal(0.0, 8.0, (12, 30, 8))), body], axis=2).astype(np.float32)
    padded = mr.copy()
    padded[:, :4] = -32768.0
    assert preprocess.lowest_unpadded(padded) == float(mr[:, 4:].min())
    np.testing.assert_array_equal(preprocess.lift_padding(padded), np.where(padded < -1, mr[:, 4:].min(), mr))
    np.testing.assert_allclose(np.asarray(preprocess.window_mr(padded))[:, 4:], np.asarray(preprocess.window_mr(mr[:, 4:])), atol=1e-6)
    noiseless = np.concatenate([np.zeros((4, 5, 3)), np.full((4, 5, 3), 500.0)], axis=2)
    assert preprocess.lowest_unpadded(noiseless) == 0.0
    air = rng.normal(-1000.0, 15.0, (12, 30, 30))
    assert preprocess.lowest_unpadded(air) == air.min()
    assert preprocess.lowest_unpadded(np.where(np.arange(30) < 3, -3024.0, air)) == pytest.approx(air[..., 3:].min())
    soft = rng.normal(-40.0, 60.0, (12, 30, 30))
    assert preprocess.lowest_unpadded(np.where(np.arange(30) < 3, -3024.0, soft)) == pytest.approx(soft[..., 3:].min())


def test_mr_window_ignores_an_outlying_maximum():
    """A hot voxel at 50 times the brightest tissue leaves liver and fat apart in the window (two thirds of their
    separation without it; a fortieth by the thesis rule); an image without one keeps its maximum as the peak."""
    rng = np.random.default_rng(0)
    body = np.where(rng.random((20, 30, 30)) < 0.5, 400.0, 800.0) + rng.normal(0.0, 20.0, (20, 30, 30))
    image = np.concatenate([np.zeros((20, 30, 10)), body], axis=2).astype(np.float32)  # air, liver-like, fat-like
    assert preprocess.mr_peak(image) == float(image.max())
    hot = image.copy()
    hot[10, 15, 20] = 50.0 * image.max()
    assert preprocess.mr_peak(hot) == pytest.approx(2.0 * np.percentile(hot[hot > 0], 99.9), rel=1e-5)
    small = np.zeros((40, 40, 40), np.float32)
    small[:2, :2, :10] = 500.0  # a body in 0.06 % of the field: the percentile of all voxels would be the minimum
    assert preprocess.mr_peak(small) == 500.0 and preprocess.mr_peak(np.full((3, 3, 3), 7.0)) == 7.0
    def separation(a):
        windowed = np.asarray(preprocess.window_mr(a))
        liver, fat = (np.median(windowed[..., 10:][np.abs(image[..., 10:] - v) < 60.0]) for v in (400.0, 800.0))
        return fat - liver

    assert separation(hot) > 0.6 * separation(image) > 0.25


def test_crop_to_mask_keeps_world_positions():
    vol = make_volume(np.random.default_rng(0).normal(size=(20, 21, 22)).astype(np.float32), (0.8, 1.2, 2.0), (3, 4, 5), ROT_A)
    mask = np.zeros(vol.shape, bool)
    mask[5:9, 6:12, 7:10] = True
    crop = preprocess.crop_to_mask(vol, mask, margin_mm=2.0)
    # margin 2 mm -> 1 voxel in z (2.0 mm), 2 in y (1.2 mm), 3 in x (0.8 mm)
    assert crop.shape == (6, 10, 9)
    back = preprocess.resample_to(crop, vol, order=0)
    inside = np.asarray(back.array) != 0
    np.testing.assert_array_equal(np.asarray(back.array)[inside], np.asarray(vol.array)[inside])
    assert inside[mask].all()
    with pytest.raises(ValueError, match="empty"):
        preprocess.crop_to_mask(vol, np.zeros(vol.shape, bool))


def test_a_grid_is_a_volume_without_data():
    """Grid: the geometry functions give the same on a Grid as on a Volume of it; its shape is static under jit (no
    placeholder array travels); make_grid validates like make_volume; with_array checks the shape."""
    vol = make_volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), (0.8, 1.2, 2.5), (10.0, -4.0, 7.0),
                      np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    grid = vol.grid
    assert grid.shape == (4, 5, 6) and grid.size_xyz == (6, 5, 4) and grid.grid is grid
    np.testing.assert_array_equal(np.asarray(world_grid(grid)), np.asarray(world_grid(vol)))
    assert jax.tree.leaves(grid)[0].shape == (3,) and len(jax.tree.leaves(grid)) == 3  # geometry only
    shifted = jax.jit(lambda g: world_grid(g)[0, 0, 0])(dataclasses.replace(grid, origin_mm=np.zeros(3)))
    np.testing.assert_allclose(np.asarray(shifted), 0.0)
    assert same_grid(make_grid((4, 5, 6), vol.spacing_mm, vol.origin_mm, vol.direction), vol)
    np.testing.assert_array_equal(grid.with_array(np.asarray(vol.array)).array, vol.array)
    with pytest.raises(ValueError, match="does not match grid"):
        grid.with_array(np.zeros((4, 5, 7)))
    with pytest.raises(ValueError, match="spacing must be positive"):
        make_grid((2, 2, 2), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0))
    out = preprocess.resample_to(vol, make_grid((2, 2, 2), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0)))
    assert out.shape == (2, 2, 2) and np.allclose(out.spacing_mm, 2.0)

"""Warping in physical space, checked against SimpleITK and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from sirtjax.io import read_volume, to_sitk, write_volume
from sirtjax.interpolate import gather_linear, sample_index, sample_world
from sirtjax.registration.pyramid import (
    channel_boxes, gaussian_smooth, pyramid_level, pyramid_level_sparse, shrink_grid, smooth_and_shrink,
)
from sirtjax.registration.bspline import bspline_on_grid, gather_bspline
from sirtjax.registration.warp import (
    AffineTransform, affine_displacement, affine_to_homogeneous, compose_displacements, resample_field,
    sample_channels, warp_volume,
)
from sirtjax.volume import make_volume, world_grid, world_points_to_index


def _rotation(deg_x, deg_z):
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


@pytest.fixture(scope="module")
def oblique_pair():
    rng = np.random.default_rng(0)
    fixed = make_volume(rng.normal(size=(14, 16, 18)).astype(np.float32), (2.0, 1.5, 3.0), (-12.0, 5.0, -20.0),
                        _rotation(10, -20))
    moving = make_volume(ndi.gaussian_filter(rng.normal(size=(16, 15, 20)), 1).astype(np.float32) * 100,
                         (1.8, 2.2, 2.5), (-15.0, -3.0, -22.0), _rotation(-15, 30))
    return fixed, moving


def test_gather_linear_matches_scipy_and_its_gradient():
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(7, 8, 9, 2)).astype(np.float32)
    idx = rng.uniform(-0.4, 7.4, size=(50, 3)).astype(np.float32)  # (x, y, z), inside the half-voxel border
    ours = np.asarray(gather_linear(jnp.asarray(arr), jnp.asarray(idx)))
    coords = [idx[:, 2], idx[:, 1], idx[:, 0]]
    ref = np.stack([ndi.map_coordinates(arr[..., c], coords, order=1, mode="nearest") for c in range(2)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # float32 trilinear
    # custom VJP against autodiff of jax's own map_coordinates
    def ref_fn(i):
        c = [i[:, 2], i[:, 1], i[:, 0]]
        return sum(jnp.sum(jax.scipy.ndimage.map_coordinates(arr[..., k], c, order=1, mode="nearest") ** 2) for k in range(2))
    # jitted: one program each instead of op-by-op compiles of the autodiff graphs
    g_ours = jax.jit(jax.grad(lambda i: jnp.sum(gather_linear(jnp.asarray(arr), i) ** 2)))(jnp.asarray(idx))
    g_ref = jax.jit(jax.grad(ref_fn))(jnp.asarray(idx))
    np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_ref), rtol=1e-4, atol=1e-4)
    # gradient w.r.t. the array (a scatter of 2 x 2 x 2 blocks into a padded array in the custom VJP) against autodiff
    # of the reference, also for points far past every border (clamped there: the padding folds onto the border voxels)
    far = rng.uniform(-3.0, 11.0, size=(200, 3)).astype(np.float32)
    for pts in (idx, far):
        c = [jnp.asarray(pts[:, 2]), jnp.asarray(pts[:, 1]), jnp.asarray(pts[:, 0])]
        ga = jax.jit(jax.grad(lambda a: jnp.sum(gather_linear(a, jnp.asarray(pts), (1, 2))[..., 0] ** 2)))(jnp.asarray(arr))
        gr = jax.jit(jax.grad(lambda a: jnp.sum(jax.scipy.ndimage.map_coordinates(
            a[..., 1], c, order=1, mode="nearest") ** 2)))(jnp.asarray(arr))
        np.testing.assert_allclose(np.asarray(ga[..., 1]), np.asarray(gr[..., 1]), atol=1e-4)
        np.testing.assert_array_equal(np.asarray(ga[..., 0]), 0.0)  # a channel not sampled gets no gradient


def test_sample_index_is_scipy_inside_and_the_default_outside():
    """The one interpolation core: trilinear (float32) and nearest (the dtype kept; half-way rounds up) match scipy's
    map_coordinates with clamped neighbours within half a voxel of the grid; past that, the default value (ITK)."""
    rng = np.random.default_rng(2)
    arr = rng.normal(size=(6, 7, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=(6, 7, 8)).astype(np.uint8)
    idx = rng.uniform(-1.5, 8.5, size=(400, 3)).astype(np.float32)
    inside = np.all((idx >= -0.5) & (idx < np.array([7.5, 6.5, 5.5])), axis=-1)
    assert 50 < inside.sum() < 350
    coords = [idx[:, 2], idx[:, 1], idx[:, 0]]
    linear = np.asarray(sample_index(arr, jnp.asarray(idx), default_value=-9.0))
    np.testing.assert_allclose(linear[inside], ndi.map_coordinates(arr, coords, order=1, mode="nearest")[inside], atol=1e-5)
    assert np.all(linear[~inside] == -9.0)
    nearest = np.asarray(sample_index(labels, jnp.asarray(idx), order=0, default_value=7))
    ref = ndi.map_coordinates(labels, [np.floor(c + 0.5) for c in coords], order=0, mode="nearest")
    assert nearest.dtype == np.uint8 and np.array_equal(nearest[inside], ref[inside]) and np.all(nearest[~inside] == 7)
    with pytest.raises(ValueError, match="order must be 0 or 1"):
        sample_index(arr, jnp.asarray(idx), order=3)


def _written_out_spline(c, i):
    """Cubic B-spline coefficients c (z, y, x, C) at indices i (N, 3) (x, y, z) as 64 clamped gathers (a reference for autodiff)."""
    t = i - jnp.floor(i)
    w = jnp.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], -1) / 6.0
    b = jnp.floor(i).astype(jnp.int32)
    at = [[jnp.clip(b[:, a] + o - 1, 0, c.shape[2 - a] - 1) for o in range(4)] for a in range(3)]
    return sum((w[:, 2, oz] * w[:, 1, oy] * w[:, 0, ox])[:, None] * c[at[2][oz], at[1][oy], at[0][ox]]
               for oz in range(4) for oy in range(4) for ox in range(4))


def test_gather_bspline_matches_scipy_cubic_spline_and_reproduces_linear_fields():
    """Coefficients evaluated as scipy's order-3 spline without prefilter (border coefficients repeated); a linear
    coefficient field is its own spline (B-splines reproduce linear functions), in a resampled field Volume too."""
    rng = np.random.default_rng(2)
    coef = rng.normal(size=(6, 7, 8, 2)).astype(np.float32)
    idx = rng.uniform(-2.5, 9.5, size=(120, 3)).astype(np.float32) * np.float32([1.0, 6 / 7, 5 / 7])  # (x, y, z), past the borders
    ours = np.asarray(gather_bspline(jnp.asarray(coef), jnp.asarray(idx)))
    coords = [idx[:, 2], idx[:, 1], idx[:, 0]]
    ref = np.stack([ndi.map_coordinates(coef[..., c], coords, order=3, prefilter=False, mode="nearest") for c in range(2)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # the custom VJP against autodiff of the spline written out as 64 clamped gathers
    g_out = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    grads = [jax.jit(jax.grad(lambda c, i: jnp.sum(fn(c, i) * g_out), argnums=(0, 1)))(jnp.asarray(coef), jnp.asarray(idx))
             for fn in (gather_bspline, _written_out_spline)]
    for ours_g, ref_g in zip(*grads):
        np.testing.assert_allclose(np.asarray(ours_g), np.asarray(ref_g), atol=1e-4)
    nodes = make_volume(np.zeros((9, 10, 11), np.float32), (12.0, 10.0, 14.0), (-40.0, -30.0, -50.0), _rotation(10, -20))
    p = np.asarray(world_grid(nodes))
    linear = nodes.with_array(np.stack([0.1 * p[..., 0] + 0.05 * p[..., 2], -0.08 * p[..., 1], 2.0 + 0.0 * p[..., 0]], -1).astype(np.float32))
    fine = make_volume(np.zeros((12, 13, 14), np.float32), (5.0, 6.0, 7.0), (-20.0, -10.0, -30.0), _rotation(10, -20))
    q = np.asarray(world_grid(fine))
    expected = np.stack([0.1 * q[..., 0] + 0.05 * q[..., 2], -0.08 * q[..., 1], 2.0 + 0.0 * q[..., 0]], -1)
    u = np.asarray(world_points_to_index(nodes, jnp.asarray(q)))
    away = np.all((u >= 1) & (u <= np.asarray(nodes.shape[::-1]) - 3), -1)  # 4 x 4 x 4 coefficients inside the grid
    assert away.mean() > 0.3
    np.testing.assert_allclose(np.asarray(resample_field(linear, fine, order=3))[away], expected[away], atol=1e-3)


def test_bspline_on_grid_matches_scipy_at_every_voxel():
    """Nodes every 4th voxel of a grid reaching past the coefficients (x: 30 / 4 > 7 nodes): scipy's order-3 spline
    at voxel / 4; its custom VJP against autodiff of the spline written out as 64 clamped gathers (past the last
    node too, where the clamped spline is constant), inside a jit as the registration steps use it."""
    rng = np.random.default_rng(3)
    coef = rng.normal(size=(5, 6, 7, 2)).astype(np.float32)
    shape = (19, 23, 30)
    z, y, x = (a.ravel() for a in np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"))
    vox = jnp.asarray(np.stack([x, y, z], -1), jnp.int32)
    ours = np.asarray(bspline_on_grid(jnp.asarray(coef), vox, shape, 4))
    ref = np.stack([ndi.map_coordinates(coef[..., c], [z / 4, y / 4, x / 4], order=3, prefilter=False, mode="nearest")
                    for c in range(2)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    g_out = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    grads = [jax.jit(jax.grad(lambda c: jnp.sum(fn(c) * g_out)))(jnp.asarray(coef))
             for fn in (lambda c: bspline_on_grid(c, vox, shape, 4),
                        lambda c: _written_out_spline(c, vox.astype(jnp.float32) / 4))]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-4, atol=1e-3)


def test_sample_channels_matches_foundation_sampler(oblique_pair):
    fixed, moving = oblique_pair
    pts = world_grid(fixed)
    ours, inside = jax.jit(sample_channels, static_argnums=2)(moving, pts, -7.0)  # one program, not op by op
    ref = jax.jit(lambda v, p: sample_world(v, p, default_value=-7.0))(moving, pts)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-3)  # float32, values ~100
    assert 0 < float(jnp.mean(inside)) < 1  # the test really exercises the outside rule


def test_displacement_field_round_trips_through_simpleitk(oblique_pair, tmp_path):
    """SimpleITK, given our displacement.nii.gz, warps the moving image exactly as sirtjax does."""
    fixed, moving = oblique_pair
    p = np.asarray(world_grid(fixed))
    u = 4.0 * np.sin(p[..., [1, 2, 0]] / 15.0) + np.array([3.0, -2.0, 1.0])  # smooth, anisotropic
    disp = fixed.with_array(u.astype(np.float32))
    path = write_volume(disp, tmp_path / "displacement.nii.gz")
    field = sitk.ReadImage(str(path), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(field)
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(moving), to_sitk(fixed), tx, sitk.sitkLinear, 0.0))
    ours = np.asarray(warp_volume(moving, read_volume(path, vector=True)).array)
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # float32 field and interpolation vs ITK's float64


def test_affine_field_matches_simpleitk_affine(oblique_pair):
    fixed, moving = oblique_pair
    aff = AffineTransform(jnp.asarray(_rotation(5, 8) * 1.03, jnp.float32), jnp.asarray([4.0, -3.0, 2.0]),
                          jnp.asarray([1.0, 2.0, -5.0]))
    h = affine_to_homogeneous(aff)
    tx = sitk.AffineTransform(h[:3, :3].ravel().tolist(), h[:3, 3].tolist())
    ref = sitk.GetArrayFromImage(sitk.Resample(to_sitk(moving), to_sitk(fixed), tx, sitk.sitkLinear, 0.0))
    disp = fixed.with_array(np.asarray(affine_displacement(aff, fixed)))
    np.testing.assert_allclose(np.asarray(warp_volume(moving, disp).array), ref, atol=2e-3)


def test_label_warp_is_nearest_and_keeps_dtype(oblique_pair):
    fixed, _ = oblique_pair
    labels = make_volume((np.arange(14 * 16 * 18).reshape(14, 16, 18) % 5).astype(np.uint8), fixed.spacing_mm,
                         fixed.origin_mm, fixed.direction)
    zero = fixed.with_array(np.zeros(fixed.shape + (3,), np.float32))
    out = warp_volume(labels, zero, order=0)
    assert out.array.dtype == np.uint8
    np.testing.assert_array_equal(out.array, labels.array)


def test_warp_through_a_program_cache_pads_to_buckets_and_gives_the_same_values(oblique_pair, tmp_path):
    """With a ProgramCache the arrays are padded to bucket shapes (the moving image by its border voxels, its true size
    kept for the outside test): the same image, labels and defaults as the unpadded warp, and one program serves
    another moving grid of the same bucket and another default value."""
    from sirtjax.programs import ProgramCache
    from sirtjax.buckets import grid_bucket

    fixed, moving = oblique_pair
    assert tuple(grid_bucket(moving)) != moving.shape and tuple(grid_bucket(fixed)) != fixed.shape  # really padded
    p = np.asarray(world_grid(fixed))
    disp = fixed.with_array((4.0 * np.sin(p[..., [1, 2, 0]] / 15.0) + np.array([3.0, -2.0, 1.0])).astype(np.float32))
    labels = moving.with_array((np.asarray(moving.array) > 0).astype(np.uint8) * 3)
    programs = ProgramCache(tmp_path)
    for vol, order, default in ((moving, 1, -7.0), (moving, 1, 0.0), (labels, 0, 0.0)):
        want = warp_volume(vol, disp, order=order, default_value=default)
        got = warp_volume(vol, disp, order=order, default_value=default, programs=programs)
        assert got.array.dtype == want.array.dtype and got.shape == fixed.shape
        np.testing.assert_allclose(got.array, want.array, rtol=1e-6, atol=1e-4)  # float32: other shapes, other fusions
        np.testing.assert_array_equal(got.array == default, want.array == default)  # the same points outside
    assert 0 < np.mean(np.asarray(want.array) == 0) < 1  # some points fall outside
    smaller = make_volume(np.asarray(moving.array)[:, :-1], moving.spacing_mm, moving.origin_mm, moving.direction)  # same bucket
    programs_before = len(programs._loaded)
    np.testing.assert_allclose(warp_volume(smaller, disp, programs=programs).array, warp_volume(smaller, disp).array,
                               rtol=1e-6, atol=1e-4)
    assert len(programs._loaded) == programs_before


def test_compose_translations():
    grid = make_volume(np.zeros((6, 7, 8), np.float32), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    a = grid.with_array(np.broadcast_to(np.float32([1.0, 0.5, 0.0]), (6, 7, 8, 3)).copy())
    b = grid.with_array(np.broadcast_to(np.float32([0.0, 1.0, -2.0]), (6, 7, 8, 3)).copy())
    c = compose_displacements(a, b)
    np.testing.assert_allclose(np.asarray(c.array)[1:-2, 1:-2, 1:-2], np.broadcast_to([1.0, 1.5, -2.0], (3, 4, 5, 3)), atol=1e-5)


def test_gaussian_smooth_matches_scipy():
    rng = np.random.default_rng(2)
    arr = rng.normal(size=(9, 10, 11)).astype(np.float32)
    sig = (1.5, 0.0, 0.8)
    ours = np.asarray(gaussian_smooth(jnp.asarray(arr), sig))
    ref = ndi.gaussian_filter(arr, sig, mode="nearest", truncate=4.0)
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # same sampled kernel, float32


@pytest.mark.parametrize("factor", [2, 3, 4, (2, 4, 3)])  # per axis: the passes go y (4), x (3), z (2)
def test_smooth_and_shrink_matches_scipy_smoothing_then_linear_sampling(factor):
    factors = (factor,) * 3 if isinstance(factor, int) else factor
    rng = np.random.default_rng(factors[0])
    arr = rng.normal(size=(13, 15, 14, 2)).astype(np.float32)
    sig = (0.5 * factors[0], 0.4 * factors[1], 0.0)  # one axis not smoothed, only shrunk
    ours = np.asarray(jax.jit(smooth_and_shrink, static_argnums=(1, 2))(jnp.asarray(arr), sig, factor))
    smoothed = ndi.gaussian_filter(arr.astype(np.float64), sig + (0.0,), mode="nearest", truncate=4.0)
    # block centres 0.5 (f - 1) + f i, clamped past the last voxel (map_coordinates 'nearest')
    coords = np.meshgrid(*[0.5 * (f - 1) + f * np.arange(-(-n // f)) for n, f in zip(arr.shape[:3], factors)], indexing="ij")
    ref = np.stack([ndi.map_coordinates(smoothed[..., c], coords, order=1, mode="nearest") for c in range(2)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # same sampled kernel, float32


@pytest.mark.parametrize("resolution_mm", [2.0, 3.0, 6.0, 12.0])
def test_sparse_pyramid_equals_dense_pyramid_of_one_hot_channels(resolution_mm):
    # one-hot labels on an anisotropic oblique grid: a large class touching two borders, small ones inside,
    # an empty channel; every channel computed only around its voxels must equal the dense smoothing
    labels = np.zeros((23, 61, 54), np.uint8)
    labels[:14, 20:61, 10:40] = 1
    labels[15:18, 5:9, 30:33] = 2
    labels[8:10, 40:44, 45:50] = 3
    onehot = np.stack([labels == i for i in (1, 2, 3, 4)], -1).astype(np.float32)
    vol = make_volume(onehot, (0.9, 1.1, 2.5), (4.0, -7.0, 2.0), _rotation(10, 30))
    boxes = channel_boxes(onehot)
    assert boxes[3] is None
    np.testing.assert_array_equal(boxes[1][0], [15, 5, 30])
    np.testing.assert_array_equal(boxes[1][1], [18, 9, 33])
    dense, sparse = pyramid_level(vol, resolution_mm), pyramid_level_sparse(vol, resolution_mm, boxes)
    assert sparse.shape == dense.shape
    for field in ("spacing_mm", "origin_mm", "direction"):
        np.testing.assert_array_equal(np.asarray(getattr(sparse, field)), np.asarray(getattr(dense, field)))
    np.testing.assert_allclose(np.asarray(sparse.array), np.asarray(dense.array), atol=1e-6)


def test_pyramid_level_keeps_field_of_view_and_world_position():
    vol = make_volume(np.zeros((20, 24, 28), np.float32), (1.5, 1.5, 2.0), (10.0, -5.0, 3.0), _rotation(0, 30))
    grid = shrink_grid(vol, 4)
    assert grid.shape == (5, 6, 7)
    # the first coarse voxel sits at the centre of the first 4x4x4 fine voxels
    first_block_centre = np.asarray(vol.origin_mm) + np.asarray(vol.direction) @ (np.asarray(vol.spacing_mm) * 1.5)
    np.testing.assert_allclose(np.asarray(grid.origin_mm), first_block_centre, atol=1e-9)
    # a linear ramp in world x stays the same ramp after smoothing and shrinking, away from the
    # borders where the replicated edge bends it (kernel radius 4 sigma = 8 fine voxels)
    p = np.asarray(world_grid(vol))
    ramp = vol.with_array(p[..., 0].astype(np.float32))
    lvl = pyramid_level(ramp, 6.0)
    q = np.asarray(world_grid(lvl))
    inner = (slice(3, -3), slice(2, -2), slice(2, -2))
    assert lvl.shape == (7, 6, 7)  # factors floor(6 mm / spacing): 4, 4 and 3 along x, y, z
    np.testing.assert_allclose(np.asarray(lvl.spacing_mm), [6.0, 6.0, 6.0])
    np.testing.assert_allclose(np.asarray(lvl.array)[inner], q[inner][..., 0], atol=1e-3)

"""Mattes MI against SimpleITK, SSD losses, and the regularisers on analytic fields."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.io import to_sitk
from sirtjax.registration.similarity import joint_histogram, mattes_mi
from sirtjax.metrics import jacobian_determinant
from sirtjax.registration.regularisers import (
    bending_energy, diffusion_energy, folding_penalty, spring_energy, stiffness_map,
)
from sirtjax.registration.affine import strain_excess
from sirtjax.registration.similarity import overlap_ssd, ssd
from sirtjax.registration.warp import sample_channels
from sirtjax.volume import make_volume, world_grid


def _ball_image(rng, centre, shape=(20, 22, 24)):
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    return (100.0 * (r < 7) + 50.0 * (r < 3.5) + rng.normal(0, 5, r.shape)).astype(np.float32)


@jax.jit  # one program: op-by-op dispatch of the sampling and histogram took 16 s of compiles
def _our_mi(fixed, moving):
    pts = world_grid(fixed).reshape(-1, 3)
    mv, inside = sample_channels(moving, pts)
    fv = jnp.asarray(fixed.array).reshape(-1)
    return mattes_mi(fv, mv, inside.astype(jnp.float32), fixed_range=(fv.min(), fv.max()),
                     moving_range=(jnp.min(moving.array), jnp.max(moving.array)))


@pytest.mark.parametrize("shift", [0, 1, 3, 6])
def test_mattes_mi_equals_simpleitk(shift):
    rng = np.random.default_rng(shift)
    geo = dict(spacing_mm=(2.0, 1.5, 2.5), origin_mm=(3.0, -4.0, 5.0))
    fixed = make_volume(_ball_image(rng, (12, 11, 10)), **geo)
    moving = make_volume(300.0 - _ball_image(rng, (12 + shift, 11, 10)), **geo)  # inverted contrast
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(sitk.TranslationTransform(3))
    itk_value = reg.MetricEvaluate(to_sitk(fixed), to_sitk(moving))
    ours = _our_mi(fixed, moving)
    # same Parzen windows, bins and normalisation as ITK v4; only float32 vs float64 differs
    assert -float(ours) == pytest.approx(itk_value, abs=1e-4)


def test_mi_histogram_is_built_without_a_samples_by_bins_matrix():
    n, bins = 5000, 32
    f = jnp.linspace(0, 1, n)
    jaxpr = jax.make_jaxpr(jax.grad(lambda m: mattes_mi(f, m, jnp.ones(n), fixed_range=(0.0, 1.0), moving_range=(0.0, 1.0),
                                                       bins=bins, fixed_order=3)))(f)
    sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars]
    assert max(sizes) <= 16 * n  # 4x4 Parzen window per sample, never n * bins (160000)


def test_joint_histogram_sums_to_one_and_ignores_zero_weights():
    rng = np.random.default_rng(0)
    f, m = jnp.asarray(rng.random(1000)), jnp.asarray(rng.random(1000))
    w = jnp.asarray((rng.random(1000) > 0.5).astype(np.float32))
    hist = jax.jit(lambda f, m, w: joint_histogram(f, m, w, fixed_range=(0.0, 1.0), moving_range=(0.0, 1.0), bins=16,
                                                   fixed_order=3))  # one program instead of op-by-op compiles
    h = hist(f, m, w)
    assert float(h.sum()) == pytest.approx(1.0, abs=1e-5)
    keep = np.asarray(w) > 0
    h2 = hist(f[keep], m[keep], jnp.ones(int(keep.sum())))
    np.testing.assert_allclose(np.asarray(h), np.asarray(h2), atol=1e-6)
    assert float(hist(f, m, jnp.zeros(1000)).sum()) == 0.0


def test_overlap_ssd_is_the_livers_one_minus_dice_plus_the_landmarks_mean():
    rng = np.random.default_rng(3)
    a = (rng.random((500, 3)) > 0.6).astype(np.float32)
    b = (rng.random((500, 3)) > 0.7).astype(np.float32)
    dice = 2 * (a * b).sum(0) / (a.sum(0) + b.sum(0))
    loss = float(overlap_ssd(jnp.asarray(a), jnp.asarray(b), jnp.ones(500)))
    assert loss == pytest.approx(float(1 - dice[0] + np.mean(1 - dice[1:])), rel=1e-5)
    # a mask alone (one class) is 1 - Dice; a class empty in both maps is left out; no classes at all gives 0
    assert float(overlap_ssd(jnp.asarray(a[:, :1]), jnp.asarray(b[:, :1]), jnp.ones(500))) == pytest.approx(float(1 - dice[0]), rel=1e-5)
    a[:, 2] = 0
    b[:, 2] = 0
    assert float(overlap_ssd(jnp.asarray(a), jnp.asarray(b), jnp.ones(500))) == pytest.approx(float(2 - dice[0] - dice[1]), rel=1e-5)
    assert float(overlap_ssd(jnp.zeros((10, 0)), jnp.zeros((10, 0)), jnp.ones(10))) == 0.0
    assert float(ssd(jnp.ones(4), jnp.zeros(4), jnp.asarray([1.0, 1.0, 0.0, 0.0]))) == 1.0


def _grid_points(shape, spacing, direction):
    g = make_volume(np.zeros(shape, np.float32), spacing, (5.0, -3.0, 2.0), direction)
    return g, np.asarray(world_grid(g))


def _rot(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.mark.parametrize("neighbourhood", [6, 26])
def test_spring_energy_is_zero_for_rigid_motion_and_affine_rest(neighbourhood):
    g, p = _grid_points((6, 7, 8), (1.5, 2.0, 3.0), _rot(20))
    rigid = p @ _rot(15).T + np.array([3.0, -1.0, 2.0]) - p
    assert float(spring_energy(jnp.asarray(rigid, jnp.float32), g.spacing_mm, g.direction, neighbourhood=neighbourhood)) < 1e-9
    a = np.diag([1.1, 0.9, 1.05]) @ _rot(5)
    affine_field = p @ a.T - p
    e = spring_energy(jnp.asarray(affine_field, jnp.float32), g.spacing_mm, g.direction, neighbourhood=neighbourhood)
    assert float(e) > 1e-4  # an affine stretches springs at rest under the identity ...
    e_rest = spring_energy(jnp.zeros_like(jnp.asarray(affine_field)), g.spacing_mm, g.direction,
                           rest_matrix=jnp.asarray(a, jnp.float32), neighbourhood=neighbourhood)
    assert float(e_rest) < 1e-9  # ... but not springs at rest under that affine


def test_spring_energy_uniform_stretch_is_analytic_and_spacing_aware():
    # stretching world x by 10 % strains every x-aligned spring by 0.1; with the 6-neighbourhood
    # one spring direction in three is strained, on any grid spacing
    for spacing in [(1.0, 1.0, 1.0), (2.0, 0.7, 3.0)]:
        g, p = _grid_points((5, 6, 7), spacing, np.eye(3))
        u = np.zeros_like(p)
        u[..., 0] = 0.1 * p[..., 0]
        e = spring_energy(jnp.asarray(u, jnp.float32), g.spacing_mm, g.direction, neighbourhood=6)
        nx, ny, nz = 5 * 6 * 6, 5 * 5 * 7, 4 * 6 * 7  # springs along x, y, z on the (z, y, x) = (5, 6, 7) grid
        expected = 0.01 * nx / (nx + ny + nz)
        assert float(e) == pytest.approx(expected, rel=1e-4)


def test_spring_26_resists_shear_that_6_barely_sees():
    g, p = _grid_points((6, 6, 6), (1.0, 1.0, 1.0), np.eye(3))
    u = np.zeros_like(p)
    u[..., 0] = 0.05 * p[..., 1]  # simple shear
    e6 = float(spring_energy(jnp.asarray(u, jnp.float32), g.spacing_mm, g.direction, neighbourhood=6))
    e26 = float(spring_energy(jnp.asarray(u, jnp.float32), g.spacing_mm, g.direction, neighbourhood=26))
    assert e26 > 20 * e6  # first order in the shear for diagonal springs, second order for axis springs


def test_stiffness_map_weights_the_spring_energy():
    g, p = _grid_points((5, 5, 5), (1.0, 1.0, 1.0), np.eye(3))
    u = jnp.asarray(0.1 * p - 0.1 * p.mean((0, 1, 2)), jnp.float32)
    base = float(spring_energy(u, g.spacing_mm, g.direction))
    stiff = stiffness_map(jnp.ones((5, 5, 5)), inside=3.0)
    assert float(spring_energy(u, g.spacing_mm, g.direction, stiffness=stiff)) == pytest.approx(3 * base, rel=1e-5)


def _naive_spring_energy(u, spacing, direction, rest_matrix, stiffness):
    """The spring model written out directly (every spring of the 26-neighbourhood once), for autodiff."""
    d = jnp.asarray(direction) * jnp.asarray(spacing)
    total, count = 0.0, 0
    shape = u.shape[:3]
    for o in itertools.product((-1, 0, 1), repeat=3):  # (z, y, x) offsets
        if o <= (0, 0, 0):
            continue
        rest = jnp.matmul(rest_matrix, jnp.matmul(d, jnp.asarray(o[::-1], jnp.float32), precision="highest"),
                          precision="highest")  # full float32 on a GPU (not TF32)
        a = tuple(slice(max(-k, 0), n - max(k, 0)) for k, n in zip(o, shape))
        b = tuple(slice(max(k, 0), n - max(-k, 0)) for k, n in zip(o, shape))
        strain = jnp.linalg.norm(rest + u[b] - u[a], axis=-1) / jnp.linalg.norm(rest) - 1.0
        total = total + jnp.sum(0.5 * (stiffness[a] + stiffness[b]) * strain**2)
        count += strain.size
    return total / count


def test_spring_energy_gradients_match_autodiff_of_the_written_out_energy():
    """The hand-written VJP (field, rest matrix, stiffness) against jax.grad of a direct formula, oblique anisotropic grid."""
    g, _ = _grid_points((5, 6, 7), (1.2, 0.8, 2.5), _rot(25))
    u = 0.4 * jax.random.normal(jax.random.key(0), (5, 6, 7, 3))
    m = jnp.eye(3) + 0.05 * jax.random.normal(jax.random.key(1), (3, 3))
    k = 1.0 + jax.random.uniform(jax.random.key(2), (5, 6, 7))
    ours = lambda u, m, k: spring_energy(u, g.spacing_mm, g.direction, rest_matrix=m, stiffness=k)  # noqa: E731
    ref = lambda u, m, k: _naive_spring_energy(u, g.spacing_mm, g.direction, m, k)  # noqa: E731
    assert float(ours(u, m, k)) == pytest.approx(float(ref(u, m, k)), rel=1e-5)
    for a, b in zip(jax.grad(ours, argnums=(0, 1, 2))(u, m, k), jax.grad(ref, argnums=(0, 1, 2))(u, m, k)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-6 * float(np.abs(b).max()))


def test_folding_penalty_matches_the_jacobian_metric_and_only_bites_below_the_margin():
    """folding_penalty and its VJP against jax.grad of relu(0.1 - det J)^2 with det J from sirtjax.metrics (oblique grid)."""
    g, p = _grid_points((6, 7, 8), (1.5, 2.0, 3.0), _rot(25))
    m = jnp.asarray(np.diag([1.05, 0.97, 1.0]), jnp.float32)
    smooth = jnp.asarray(0.05 * np.sin(p / 10.0), jnp.float32)
    assert float(folding_penalty(smooth, g.spacing_mm, g.direction, rest_matrix=m)) == 0.0  # det J near 1
    u = 3.0 * jax.random.normal(jax.random.key(0), (6, 7, 8, 3))  # folds in many voxels

    def reference(u):
        field = g.with_array(jnp.zeros((6, 7, 8, 3)))
        # the map p -> M p + u(p) is p -> p + ((M - I) p + u(p)): its displacement on the grid
        det = jacobian_determinant(field.with_array(u + jnp.asarray(np.asarray(p) @ (np.asarray(m) - np.eye(3)).T, jnp.float32)))
        return jnp.mean(jnp.maximum(0.1 - det, 0.0) ** 2)

    ours = lambda u: folding_penalty(u, g.spacing_mm, g.direction, rest_matrix=m)  # noqa: E731
    assert float(ours(u)) == pytest.approx(float(reference(u)), rel=1e-4) and float(ours(u)) > 0.1
    np.testing.assert_allclose(np.asarray(jax.grad(ours)(u)), np.asarray(jax.grad(reference)(u)), rtol=1e-3, atol=1e-6)


def test_diffusion_and_bending_energy_on_analytic_fields():
    g, p = _grid_points((8, 9, 10), (1.0, 2.0, 0.5), np.eye(3))
    translation = jnp.ones(p.shape, jnp.float32)
    assert float(diffusion_energy(translation, g.spacing_mm)) == 0.0
    linear = np.zeros_like(p)
    linear[..., 1] = 0.2 * p[..., 0]  # du_y/dx = 0.2 everywhere
    assert float(diffusion_energy(jnp.asarray(linear, jnp.float32), g.spacing_mm)) == pytest.approx(0.04, rel=1e-4)
    assert float(bending_energy(jnp.asarray(linear, jnp.float32), g.spacing_mm)) < 1e-8  # affine: no bending
    quad = np.zeros_like(p)
    quad[..., 2] = 0.01 * p[..., 2] ** 2  # d2u_z/dz2 = 0.02, exact for central differences inside
    e = bending_energy(jnp.asarray(quad, jnp.float32), g.spacing_mm)
    assert 0 < float(e) <= 0.02**2 * 1.0001  # one-sided edges see less curvature


def test_strain_excess_is_zero_for_rotations_and_exact_for_a_stretch():
    from scipy.spatial.transform import Rotation

    for r in Rotation.random(5, random_state=0).as_matrix():
        assert float(strain_excess(jnp.asarray(r, jnp.float32), 0.0)) < 1e-10
    r = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    for s in (0.5, 0.9, 1.2, 1.6):  # a rotated stretch s along one axis: E has the one eigenvalue (s^2 - 1) / 2
        m = jnp.asarray(r @ np.diag([1.0, s, 1.0]), jnp.float32)
        expected = max(((s * s - 1) / 2) ** 2 - 0.15**2, 0.0)
        np.testing.assert_allclose(float(strain_excess(m, 0.15)), expected, rtol=1e-5, atol=1e-7)
    grad = jax.grad(strain_excess)(jnp.eye(3), 0.15)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) == 0.0

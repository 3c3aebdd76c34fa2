"""LDM and VSV dose against analytic cases, the tables and scipy; activity maps from SPECT and PET."""

import math

import jax
import numpy as np
import pytest
import scipy.signal

from sirtjax.dosimetry.activity import activity_from_bq_per_ml, activity_from_counts
from sirtjax.dosimetry.dose import convolve_same, dose_ldm, dose_vsv, hu_to_density_g_ml
from sirtjax.dosimetry.kernels import load_vsv_octant, voxel_kernel

MEV_J = 1.602176634e-13
DECAYS_PER_GBQ = 1e9 * 64.1 * 3600 / math.log(2)  # ICRP-107 half-life, permanent trapping
ENERGY_J = 0.9267 * MEV_J


def test_convolution_matches_scipy_without_wraparound():
    rng = np.random.default_rng(1)
    vol = rng.random((12, 17, 9)).astype(np.float32)
    vol[:, :, 0] = 5.0  # mass at the border: a circular convolution would wrap it to the far side
    kernel = rng.random((5, 7, 3)).astype(np.float32)
    ref = scipy.signal.fftconvolve(vol.astype(np.float64), kernel.astype(np.float64), mode="same")
    got = np.asarray(convolve_same(vol, kernel))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.max())  # float32 FFT
    eager = np.asarray(convolve_same.__wrapped__(vol, kernel))  # the un-jitted function agrees
    np.testing.assert_allclose(eager, got, rtol=1e-5, atol=1e-5 * ref.max())


@pytest.mark.parametrize("size", [4.42, 2.21])
def test_point_source_vsv_gives_the_tabulated_s_values(size):
    activity = np.zeros((15, 15, 15), np.float32)
    activity[7, 7, 7] = 1e-3 * math.log(2) / (64.1 * 3600)  # GBq giving 1 MBq*s cumulated
    dose = np.asarray(dose_vsv(activity, [size] * 3))
    table = load_vsv_octant(size)
    # dose per 1 MBq*s is S in mGy: self-dose S(0,0,0), neighbours S(0,0,k), S(1,1,1) (float32 FFT)
    assert dose[7, 7, 7] * 1e3 == pytest.approx(table[0, 0, 0], rel=1e-4)
    for k in (1, 2, 3):
        assert dose[7, 7, 7 + k] * 1e3 == pytest.approx(table[0, 0, k], rel=1e-3, abs=1e-6 * table[0, 0, 0])
    assert dose[8, 8, 8] * 1e3 == pytest.approx(table[1, 1, 1], rel=1e-3)


def test_point_source_ldm_is_energy_over_mass():
    spacing = (4.0, 3.0, 2.5)
    activity = np.zeros((5, 5, 5), np.float32)
    activity[2, 2, 2] = 1.0
    dose = np.asarray(dose_ldm(activity, spacing, constants="icrp107", density_g_ml=1.03))
    mass_kg = 1.03 * (4.0 * 3.0 * 2.5 / 1000) / 1000
    assert dose[2, 2, 2] == pytest.approx(ENERGY_J * DECAYS_PER_GBQ / mass_kg, rel=1e-5)  # E * A_cum / (rho V)
    assert np.count_nonzero(dose) == 1
    resin = np.asarray(dose_ldm(activity, spacing, constants="resin", density_g_ml=1.0))
    assert resin[2, 2, 2] == pytest.approx(49.67 / (30.0 / 1e6), rel=1e-5)  # 49.67 Gy kg/GBq


@pytest.mark.parametrize("spacing", [(4.42, 4.42, 4.42), (4.42, 4.42, 3.0)])
def test_uniform_block_vsv_agrees_with_ldm_and_conserves_energy(spacing):
    activity = np.zeros((34, 30, 30), np.float32)
    activity[8:26, 7:23, 7:23] = 2e-4  # GBq per voxel; the block sits 7+ voxels (> 12 mm) from the edges
    vsv = np.asarray(dose_vsv(activity, spacing))
    ldm = np.asarray(dose_ldm(activity, spacing, density_g_ml=1.03))
    inner = (slice(14, 20), slice(13, 17), slice(13, 17))  # > 12 mm (the beta range) inside the block
    # far from the edges VSV equals LDM up to the kernel's density (1.030 vs 1.03) and tail truncation
    np.testing.assert_allclose(vsv[inner], ldm[inner], rtol=1e-2)
    # total energy: sum(dose * rho * V) equals the emitted energy (the grid holds the whole kernel)
    volume_kg = float(np.prod(spacing)) * 1e-6 * 1.03
    deposited = vsv.astype(np.float64).sum() * volume_kg
    emitted = float(activity.astype(np.float64).sum()) * DECAYS_PER_GBQ * ENERGY_J
    assert deposited == pytest.approx(emitted, rel=5e-3)  # kernel truncation and 1.03 vs closure density


@pytest.mark.parametrize("factors", [(3, 2, 1)])
def test_anisotropic_kernel_agrees_with_the_fine_table(factors):
    """The same source on anisotropic voxels of (3, 2, 1) x 2.21 mm (point kernel) and on 2.21 mm cubes (table).

    Each coarse voxel is a block of fine voxels holding its activity uniformly, so both grids
    describe one physical source; the coarse dose must equal the block mean of the fine dose.
    """
    rng = np.random.default_rng(3)
    fx, fy, fz = factors
    coarse_shape = (24 // fz, 24 // fy, 24 // fx)
    coarse_act = np.zeros(coarse_shape, np.float32)
    core = tuple(slice(n // 3, n - n // 3) for n in coarse_shape)
    coarse_act[core] = rng.gamma(2.0, 1e-4, coarse_act[core].shape)  # heterogeneous, voxel to voxel
    fine_act = np.repeat(np.repeat(np.repeat(coarse_act, fz, 0), fy, 1), fx, 2) / (fx * fy * fz)
    coarse_sp = (2.21 * fx, 2.21 * fy, 2.21 * fz)
    assert voxel_kernel(coarse_sp).method == "point-kernel"
    coarse = np.asarray(dose_vsv(coarse_act, coarse_sp))
    fine = np.asarray(dose_vsv(fine_act, (2.21, 2.21, 2.21)))
    block_mean = fine.reshape(coarse_shape[0], fz, coarse_shape[1], fy, coarse_shape[2], fx).mean(axis=(1, 3, 5))
    hot = block_mean > 0.1 * block_mean.max()
    # the point kernel reproduces held-out tables within 1 %; block sums of neighbours do as well
    np.testing.assert_allclose(coarse[hot], block_mean[hot], rtol=1e-2)
    # energy: both deposit the same total
    assert coarse.sum() * np.prod(coarse_sp) == pytest.approx(fine.sum() * 2.21**3, rel=3e-3)


def test_density_scaling_and_ct_calibration():
    hu = np.array([-2000.0, -1000.0, 0.0, 60.0, 1500.0, 3000.0])
    rho = np.asarray(hu_to_density_g_ml(hu))
    np.testing.assert_allclose(rho, [0.0012, 0.0012, 1.0, 1.036, 1.9, 1.9], rtol=1e-5)  # clamped at the ends
    activity = np.zeros((9, 9, 9), np.float32)
    activity[4, 4, 4] = 1e-3
    density = np.full(activity.shape, 2.0, np.float32)
    plain = np.asarray(dose_vsv(activity, [4.42] * 3))
    dense = np.asarray(dose_vsv(activity, [4.42] * 3, density_g_ml=density))
    closure = voxel_kernel([4.42] * 3).closure_density_g_ml()
    np.testing.assert_allclose(dense, plain * closure / 2.0, rtol=1e-5)
    ldm = np.asarray(dose_ldm(activity, [4.42] * 3, density_g_ml=density))
    assert ldm[4, 4, 4] == pytest.approx(np.asarray(dose_ldm(activity, [4.42] * 3, density_g_ml=1.0))[4, 4, 4] / 2, rel=1e-6)


def test_constant_sets_scale_vsv_like_ldm():
    activity = np.zeros((9, 9, 9), np.float32)
    activity[4, 4, 4] = 1e-3
    icrp = np.asarray(dose_vsv(activity, [4.42] * 3, constants="icrp107"))
    glass = np.asarray(dose_vsv(activity, [4.42] * 3, constants="glass"))
    np.testing.assert_allclose(glass, icrp * 50.0 / 49.4293, rtol=1e-4, atol=1e-5 * icrp.max())  # FFT round-off


def test_activity_from_counts_normalises_inside_the_liver():
    rng = np.random.default_rng(2)
    counts = rng.poisson(20, (6, 7, 8)).astype(np.float32)
    liver = np.zeros(counts.shape, bool)
    liver[1:5, 2:6, 1:7] = True
    act = np.asarray(activity_from_counts(counts, liver, activity_gbq=2.0, lung_shunt_fraction=0.1))
    assert act.sum() == pytest.approx(0.9 * 2.0, rel=1e-5)  # (1 - LSF) * A in the liver
    assert np.all(act[~liver] == 0)
    np.testing.assert_allclose(act[liver], counts[liver] / counts[liver].sum() * 1.8, rtol=1e-5)


@pytest.mark.parametrize(
    "counts_fill, mask_fill, message",
    [(1.0, False, "liver mask is empty"), (0.0, True, "zero everywhere"), (-1.0, True, "negative")],
)
def test_activity_from_counts_errors_are_clear(counts_fill, mask_fill, message):
    counts = np.full((4, 4, 4), counts_fill, np.float32)
    with pytest.raises(ValueError, match=message):
        activity_from_counts(counts, np.full(counts.shape, mask_fill), activity_gbq=1.0)
    with pytest.raises(ValueError, match="positive"):
        activity_from_counts(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool), activity_gbq=-1.0)


def test_activity_from_pet():
    pet = np.full((3, 4, 5), 1e6, np.float32)  # 1 MBq/ml
    pet[0, 0, 0] = -2e6
    act, removed = activity_from_bq_per_ml(pet, (2.0, 2.0, 5.0))  # 0.02 ml voxels
    act = np.asarray(act)
    assert act[1, 1, 1] == pytest.approx(1e6 * 0.02 * 1e-9, rel=1e-6)
    assert act[0, 0, 0] == 0 and removed == pytest.approx(2e6 * 0.02 * 1e-9, rel=1e-6)


def test_dose_is_jittable_float32_and_vmaps_like_a_loop():
    activity = jax.numpy.ones((6, 6, 6)) * 1e-4
    out = jax.jit(lambda a: dose_ldm(a, (2.0, 2.0, 2.0)))(activity)
    assert out.dtype == jax.numpy.float32
    batch = np.random.default_rng(4).random((3, 8, 9, 10)).astype(np.float32)
    kernel = np.random.default_rng(5).random((3, 5, 3)).astype(np.float32)
    batched = np.asarray(jax.vmap(convolve_same, in_axes=(0, None))(batch, kernel))
    looped = np.stack([np.asarray(convolve_same(b, kernel)) for b in batch])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)  # float32 FFT, same algorithm

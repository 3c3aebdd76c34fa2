"""Constant sets and voxel S-value kernels, checked against published numbers and the raw tables."""

import math

import numpy as np
import pytest

from sirtjax.dosimetry import point_kernel as pk
from sirtjax.dosimetry.constants import constant_sets, get_constants
from sirtjax.dosimetry.kernels import (load_vsv_octant, matching_table_mm, mirror_octant, tabulated_voxel_sizes_mm,
                                       voxel_kernel)

MEV_J = 1.602176634e-13


def test_constant_sets_match_published_factors():
    sets = constant_sets()
    # DESIGN.md / ICRP-107: 64.1 h and 0.9267 MeV give 49.43 Gy kg/GBq (rounded to 2 decimals)
    assert round(sets["icrp107"].gy_kg_per_gbq, 2) == 49.43
    # thesis eq. 1.3 prints 49.38
    assert round(sets["thesis"].gy_kg_per_gbq, 2) == 49.38
    assert sets["resin"].gy_kg_per_gbq == 49.67 and sets["glass"].gy_kg_per_gbq == 50.0
    for s in sets.values():  # every set is self-consistent: factor = E * T / ln 2
        assert s.gy_kg_per_gbq == pytest.approx(s.mean_energy_mev * MEV_J * 1e9 * s.half_life_h * 3600 / math.log(2), rel=2e-3)
    with pytest.raises(ValueError, match="unknown constant set"):
        get_constants("nonsense")


def test_shipped_tables_are_the_reference_copies():
    assert len(tabulated_voxel_sizes_mm()) == 13
    octant = load_vsv_octant(4.42)
    # PROVENANCE.md: S(0,0,0) = 0.689 and the first face neighbour 0.0973 mGy/(MBq s) at 4.42 mm
    assert octant[0, 0, 0] == 0.689 and octant[0, 0, 1] == 0.0973
    # cubic voxels: S is symmetric under permutation of the axes (MC noise aside, 1 % at most)
    np.testing.assert_allclose(octant, octant.transpose(2, 1, 0), rtol=1e-2)


@pytest.mark.parametrize("size", [2.21, 3.0, 4.42, 6.8, 9.28])
def test_kernel_energy_closure_implies_soft_tissue_density(size):
    kernel = voxel_kernel([size] * 3)
    assert kernel.method == "table"
    # sum S * rho * V = 0.9267 MeV per decay  <=>  rho ~ 1.03 g/ml (PROVENANCE.md), computed here by hand
    total_gy_per_decay = kernel.s_values.sum() * 1e-3 / 1e6
    rho_kg_per_ml = 0.9267 * MEV_J / (total_gy_per_decay * (size / 10) ** 3)
    assert rho_kg_per_ml * 1e3 == pytest.approx(1.03, abs=0.005)  # the tables' rounding and tail truncation
    assert kernel.closure_density_g_ml() == pytest.approx(rho_kg_per_ml * 1e3, rel=1e-9)


def test_mirrored_kernel_is_centred_and_symmetric():
    k = voxel_kernel([4.42] * 3).s_values
    assert k.shape == (11, 11, 11)
    assert k[5, 5, 5] == 0.689
    np.testing.assert_array_equal(k, k[::-1, ::-1, ::-1])
    assert mirror_octant(np.ones((2, 3, 4))).shape == (3, 5, 7)


def test_tabulated_sizes_match_within_tolerance():
    assert matching_table_mm([4.4196] * 3) == 4.42  # GE SPECT pixels
    assert matching_table_mm([4.42, 4.42, 3.0]) is None
    assert matching_table_mm([4.3] * 3) is None


@pytest.fixture(scope="module")
def designs():
    """Design matrices of every table: q at the nodes -> the table's octant.

    1000 directions instead of 3000 keep this to a few seconds; the quadrature error that adds is
    about 1e-3 relative, a tenth of the tolerances below.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pk, "N_DIRECTIONS", 1000)
        return {h: pk.design_matrix(np.full(3, h), (5, 5, 5)) for h in tabulated_voxel_sizes_mm()}


def _significant(octant):
    return octant > 1e-3 * octant[0, 0, 0]


def test_shipped_point_kernel_reproduces_every_table(designs):
    q = pk.load_point_kernel()
    for h, a in designs.items():
        table = load_vsv_octant(h)
        pred = a @ q[:-1]
        sig = _significant(table)
        # one radial kernel explains all 13 tables; entries below 0.1 % of S(0) are the bremsstrahlung tail
        np.testing.assert_allclose(pred[sig], table[sig], rtol=1e-2, err_msg=f"{h} mm")
        assert abs(pred.sum() / table.sum() - 1) < 3e-3  # energy within the octant


@pytest.mark.parametrize("held", [2.33, 3.0, 4.42, 6.0])
def test_held_out_table_is_predicted_within_one_percent(designs, held):
    fit = pk.fit_point_kernel({h: load_vsv_octant(h) for h in designs if h != held},
                              {h: a for h, a in designs.items() if h != held})
    table = load_vsv_octant(held)
    pred = designs[held] @ fit[:-1]
    sig = _significant(table)
    np.testing.assert_allclose(pred[sig], table[sig], rtol=1e-2)  # the interpolation error we document
    # dose error of a realistic pattern: a 3-voxel-radius hot sphere in a warm background
    from sirtjax.dosimetry.dose import convolve_same

    z, y, x = np.mgrid[:21, :21, :21] - 10
    activity = np.where(z**2 + y**2 + x**2 <= 9, 4.0, 1.0).astype(np.float32)
    ref = np.asarray(convolve_same(activity, mirror_octant(table).astype(np.float32)))
    got = np.asarray(convolve_same(activity, mirror_octant(pred).astype(np.float32)))
    inner = (slice(6, 15),) * 3
    assert np.max(np.abs(got[inner] - ref[inner])) / ref[inner].max() < 5e-3


def test_anisotropic_kernel_axes_and_energy():
    k = voxel_kernel([4.42, 4.42, 3.0])
    assert k.method == "point-kernel" and not k.extrapolated
    nz, ny, nx = k.s_values.shape
    assert nz > ny == nx  # more voxels along z, the short axis (12 mm range / 3 mm)
    # permuting the spacing permutes the kernel's axes (up to the direction quadrature, ~1e-3)
    k2 = voxel_kernel([3.0, 4.42, 4.42])
    np.testing.assert_allclose(k2.s_values, k.s_values.transpose(2, 1, 0), rtol=5e-3, atol=1e-3 * k.s_values.max())
    # energy closure is independent of the box: same density as the tables (+-0.3 %)
    assert k.closure_density_g_ml() == pytest.approx(1.03, abs=0.005)
    # self-dose: between the cubes of the longest (4.42) and shortest (3 mm) edge, and below the
    # slightly larger 3.9 mm cube (58.6 vs 59.3 mm^3): a flat box absorbs less of its own energy
    self_dose = k.s_values[nz // 2, ny // 2, nx // 2]
    assert load_vsv_octant(4.42)[0, 0, 0] < self_dose < load_vsv_octant(3.9)[0, 0, 0] < load_vsv_octant(3.0)[0, 0, 0]
    assert voxel_kernel([10.0, 10.0, 10.0]).extrapolated  # beyond the largest table (9.28 mm)

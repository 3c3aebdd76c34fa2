"""Radiobiology against the definitions it comes from: the LQ integral and a published 90Y example for BED, Lyman's
power law for NTCP, and closed forms for EUD and TCP (scipy, not sirtjax, computes the references)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from sirtjax.dosimetry.constants import Y90_HALF_LIFE_H
from sirtjax.dosimetry.radiobiology import bed_gy, eud_gy, geud_gy, lkb_ntcp, poisson_tcp


def _bed_from_the_lq_integral(dose_gy: float, alpha_beta_gy: float, repair_h: float, half_life_h: float) -> float:
    """BED = D + G D^2 / (alpha/beta), the Lea-Catcheside factor G integrated numerically over the decaying dose rate."""
    lam, mu = math.log(2) / half_life_h, math.log(2) / repair_h
    rate0 = dose_gy * lam

    def inner(t):  # int_0^t R(t') exp(-mu (t - t')) dt'
        return integrate.quad(lambda s: rate0 * math.exp(-lam * s - mu * (t - s)), 0.0, t, limit=200)[0]

    outer = integrate.quad(lambda t: rate0 * math.exp(-lam * t) * inner(t), 0.0, 40 * half_life_h, limit=400)[0]
    return dose_gy + 2.0 * outer / alpha_beta_gy


@pytest.mark.parametrize("dose_gy, alpha_beta_gy, repair_h", [(40.0, 2.5, 1.5), (120.0, 10.0, 0.5), (300.0, 3.0, 4.0)])
def test_bed_equals_the_lq_integral_of_a_decaying_implant(dose_gy, alpha_beta_gy, repair_h):
    bed = float(bed_gy(np.float32(dose_gy), alpha_beta_gy=alpha_beta_gy, repair_half_time_h=repair_h))
    assert bed == pytest.approx(_bed_from_the_lq_integral(dose_gy, alpha_beta_gy, repair_h, Y90_HALF_LIFE_H), rel=1e-5)


@pytest.mark.parametrize("dose_gy, alpha_beta_gy, repair_h, published_bed_gy, rounding_gy", [
    (40.0, 2.5, 2.5, 64.0, 0.5),  # non-tumoral liver: "a prescribed BED to NTL of 64 Gy (NTL dose = 40 Gy)"
    (65.0, 10.0, 1.5, 75.0, 2.5),  # tumours: dose 130 (65-235) Gy, BED 170 (75-360) Gy; BED rises with the dose,
    (235.0, 10.0, 1.5, 360.0, 2.5),  # so each end of the BED range is the BED of that end of the dose range
])
def test_bed_reproduces_a_published_90y_example(dose_gy, alpha_beta_gy, repair_h, published_bed_gy, rounding_gy):
    """Cremonesi et al., Eur J Nucl Med Mol Imaging 2008;35:2088 (abstract): 90Y radioembolisation, T1/2 64.2 h,
    alpha/beta 2.5 Gy and repair 2.5 h for the non-tumoral liver, 10 Gy and 1.5 h for tumours. The tumour BEDs are
    quoted to 5 Gy."""
    bed = float(bed_gy(np.float32(dose_gy), alpha_beta_gy=alpha_beta_gy, repair_half_time_h=repair_h, half_life_h=64.2))
    assert bed == pytest.approx(published_bed_gy, abs=rounding_gy)


def test_bed_limits_instant_repair_and_an_acute_dose():
    dose = np.array([0.0, 10.0, 50.0], np.float32)
    np.testing.assert_allclose(bed_gy(dose, alpha_beta_gy=3.0, repair_half_time_h=1e-9), dose, rtol=1e-6)  # no sublethal damage left
    np.testing.assert_allclose(bed_gy(dose, alpha_beta_gy=3.0, repair_half_time_h=1.0, half_life_h=1e-9),
                               dose * (1 + dose / 3.0), rtol=1e-5)  # delivered at once: the single-fraction LQ
    with pytest.raises(ValueError):
        bed_gy(dose, alpha_beta_gy=0.0, repair_half_time_h=1.0)


def test_eud_uniform_two_compartments_and_jensen():
    w = np.ones(1000, np.float32)
    assert float(eud_gy(np.full(1000, 37.0, np.float32), w, alpha_per_gy=0.3)) == pytest.approx(37.0, rel=1e-5)
    dose = np.repeat(np.array([20.0, 80.0], np.float32), 500)
    expected = -special.logsumexp([-0.3 * 20.0, -0.3 * 80.0], b=[0.5, 0.5]) / 0.3  # a cold half dominates survival
    assert float(eud_gy(dose, w, alpha_per_gy=0.3)) == pytest.approx(expected, rel=1e-5)
    rng = np.random.default_rng(0)
    d = rng.gamma(4.0, 10.0, 5000).astype(np.float32)
    assert float(eud_gy(d, np.ones_like(d), alpha_per_gy=0.2)) < d.mean()
    # weak alpha: the cumulant expansion, mean - alpha var / 2 (+ O(alpha^2))
    assert float(eud_gy(d, np.ones_like(d), alpha_per_gy=1e-3)) == pytest.approx(d.mean() - 1e-3 * d.var() / 2, rel=2e-4)


def test_geud_mean_and_maximum():
    d = np.array([10.0, 20.0, 60.0], np.float32)
    assert float(geud_gy(d, np.ones(3), a=1.0)) == pytest.approx(30.0, rel=1e-6)
    assert float(geud_gy(d, np.ones(3), a=60.0)) == pytest.approx(60.0 * (1 / 3) ** (1 / 60), rel=1e-4)
    assert float(geud_gy(d, np.array([0.0, 0.0, 2.0]), a=0.5)) == pytest.approx(60.0, rel=1e-6)  # weights are fractions
    # a negative exponent tends to the minimum (a tumour's cold spot); a zero dose outside the VOI does not count
    assert float(geud_gy(np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 1.0]), a=-10.0)) == pytest.approx(
        (0.5 * 10.0**-10 + 0.5 * 20.0**-10) ** (-1 / 10), rel=1e-5)


def test_lkb_ntcp_is_the_normal_cdf_and_follows_lymans_volume_law():
    td50, m, n = 40.0, 0.15, 0.97
    for d in (20.0, 40.0, 55.0):
        got = float(lkb_ntcp(np.full(10, d, np.float32), np.ones(10), td50_gy=td50, m=m, n=n))
        assert got == pytest.approx(stats.norm.cdf((d - td50) / (m * td50)), abs=1e-6)
    # a partial volume v irradiated uniformly, the rest unirradiated: TD50(v) = TD50 v^-n (Lyman 1985)
    for v in (0.25, 0.5, 0.8):
        voxels = 1000
        hit = int(v * voxels)
        dose = np.where(np.arange(voxels) < hit, td50 * v ** (-n), 0.0).astype(np.float32)
        assert float(lkb_ntcp(dose, np.ones(voxels), td50_gy=td50, m=m, n=n)) == pytest.approx(0.5, abs=1e-4)


def test_poisson_tcp_half_at_the_closed_form_dose():
    clonogens, alpha = 1e7, 0.35
    bed50 = math.log(clonogens / math.log(2)) / alpha  # exp(-N exp(-alpha BED)) = 1/2
    per_voxel = np.full(100, clonogens / 100, np.float32)
    assert float(poisson_tcp(np.full(100, bed50, np.float32), per_voxel, alpha_per_gy=alpha)) == pytest.approx(0.5, abs=1e-4)
    cold = np.full(100, bed50, np.float32)
    cold[0] = 0.0  # one unirradiated voxel leaves 1e5 clonogens: no control
    assert float(poisson_tcp(cold, per_voxel, alpha_per_gy=alpha)) < 1e-6

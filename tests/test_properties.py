"""Property-based tests (hypothesis) of invariants that must hold for every input, not just hand-picked cases.

Metrics (symmetry, bounds, a brute-force reference), dosimetry (linearity in activity, energy closure of the
kernel, monotone cumulative DVH), registration (an image registered to itself stays put), transform composition
against SimpleITK, and grid round trips through NIfTI, MHA and DICOM. Every test runs a fixed, derandomised set of
small examples without an example database, so a run is deterministic and takes seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from sirtjax import io, metrics
from sirtjax.dosimetry.constants import constant_sets, get_constants
from sirtjax.dosimetry.dose import dose_ldm, dose_vsv, voxel_volume_ml
from sirtjax.dosimetry.kernels import tabulated_voxel_sizes_mm, voxel_kernel
from sirtjax.dosimetry.statistics import voi_statistics
from sirtjax.dosimetry.voxel import voxel_dosimetry
from sirtjax.errors import InputError
from sirtjax.registration import NonrigidStage, RegistrationConfig, register
from sirtjax.registration.config import AffineStage, Pyramid, Regulariser, Similarity
from sirtjax.registration.warp import AffineTransform, affine_displacement, compose_displacements, warp_volume
from sirtjax.volume import Volume, index_to_world, make_volume, world_to_index

# Deterministic: derandomised examples, no database, no wall-clock deadline (JAX compiles on first use).
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=25, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

finite = functools.partial(st.floats, allow_nan=False, allow_infinity=False)


# ----------------------------------------------------------------------------- strategies


@st.composite
def rotations(draw, reflect: bool = True) -> np.ndarray:
    """A random 3x3 orthonormal direction: a rotation from a random quaternion, optionally left-handed."""
    q = np.array(draw(st.tuples(*[finite(min_value=-1.0, max_value=1.0)] * 4)))
    if np.linalg.norm(q) < 0.3:  # a short quaternion's direction is ill-conditioned; use a fixed one instead
        q = q + np.array([0.3, -0.2, 0.4, 0.5])
    r = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
    r[np.abs(r) < 1e-12] = 0.0  # no subnormal entries: ITK's index mapping can turn them into NaN
    if reflect and draw(st.booleans()):
        r = r @ np.diag([1.0, 1.0, -1.0])
    return r


@st.composite
def grids(draw, shape=None, spacing=(0.3, 8.0), origin=300.0, reflect: bool = True, max_size: int = 4) -> Volume:
    """A Volume geometry (zero array): random shape (or the given one, or one drawn from the given strategy),
    anisotropic spacing, origin and direction."""
    if shape is None:
        shape = st.tuples(*[st.integers(1, max_size)] * 3)
    if isinstance(shape, st.SearchStrategy):
        shape = tuple(draw(shape))
    sp = draw(st.tuples(*[finite(min_value=spacing[0], max_value=spacing[1])] * 3))
    org = draw(st.tuples(*[finite(min_value=-origin, max_value=origin)] * 3))
    return make_volume(np.zeros(shape, np.float32), sp, org, draw(rotations(reflect=reflect)))


@st.composite
def mask_pairs(draw, max_size: int = 6) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Two bool masks of one random shape (empty masks included) and an anisotropic spacing (x, y, z) mm."""
    shape = draw(st.tuples(*[st.integers(1, max_size)] * 3))
    a = draw(hnp.arrays(np.bool_, shape))
    b = draw(hnp.arrays(np.bool_, shape))
    spacing = draw(st.tuples(*[finite(min_value=0.5, max_value=4.0)] * 3))
    return a, b, spacing


def _seeds():
    return st.integers(0, 2**32 - 1)


# ----------------------------------------------------------------------------- metrics


def _surface_points_mm(mask: np.ndarray, spacing_xyz) -> np.ndarray:
    """Surface voxels by definition (in the mask, a 6-neighbour outside it or the image), as (z, y, x) mm points."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(m, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(mask & ~inner) * np.asarray(spacing_xyz, float)[::-1]


def _brute_force_surface(a: np.ndarray, b: np.ndarray, spacing_xyz) -> dict[str, float]:
    """ASSD, HD, HD95 by all pairwise surface distances (the documented definitions; both masks non-empty)."""
    d = cdist(_surface_points_mm(a, spacing_xyz), _surface_points_mm(b, spacing_xyz))
    ab, ba = d.min(axis=1), d.min(axis=0)
    return {"assd_mm": (ab.sum() + ba.sum()) / (ab.size + ba.size), "hd_mm": max(ab.max(), ba.max()),
            "hd95_mm": max(np.percentile(ab, 95), np.percentile(ba, 95))}


@PROPERTY
@given(mask_pairs())
def test_dice_is_symmetric_bounded_and_one_on_itself(pair):
    """Dice(a, b) = Dice(b, a) in [0, 1]; Dice(a, a) = 1; 0 for disjoint non-empty masks; 2|a&b|/(|a|+|b|)."""
    a, b, _ = pair
    d = metrics.dice(a, b)
    assert d == metrics.dice(b, a)
    assert 0.0 <= d <= 1.0
    assert metrics.dice(a, a) == 1.0 and metrics.dice(b, b) == 1.0
    if a.any() and b.any():
        assert d == pytest.approx(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)), abs=1e-12)
    if a.any() and (b & ~a).any():
        assert metrics.dice(a, b & ~a) == 0.0  # disjoint
    rv_ab, rv_ba = metrics.relative_volume(a, b), metrics.relative_volume(b, a)
    if a.any() and b.any():
        assert rv_ab * rv_ba == pytest.approx(1.0)


@PROPERTY
@given(mask_pairs())
def test_surface_distances_are_symmetric_ordered_and_match_brute_force(pair):
    """ASSD, HD and HD95 are symmetric, 0 <= HD95 <= HD, ASSD <= HD, 0 against itself, equal to a brute-force
    computation over all surface voxel pairs, and inf in both orders when exactly one mask is empty."""
    a, b, spacing = pair
    ab = metrics.surface_metrics(a, b, spacing_mm=spacing)
    ba = metrics.surface_metrics(b, a, spacing_mm=spacing)
    assert (ab.assd_mm, ab.hd_mm, ab.hd95_mm) == (ba.assd_mm, ba.hd_mm, ba.hd95_mm)
    assert (ab.msd_pred_to_ref_mm, ab.msd_ref_to_pred_mm) == (ba.msd_ref_to_pred_mm, ba.msd_pred_to_ref_mm)
    for f in (metrics.assd, metrics.hausdorff, metrics.hausdorff95):
        assert f(a, b, spacing_mm=spacing) == f(b, a, spacing_mm=spacing)
    if a.any() != b.any():
        assert ab.assd_mm == ab.hd_mm == ab.hd95_mm == math.inf
        return
    if not a.any():
        assert ab.assd_mm == ab.hd_mm == ab.hd95_mm == 0.0
        return
    assert 0.0 <= ab.hd95_mm <= ab.hd_mm and 0.0 <= ab.assd_mm <= ab.hd_mm
    assert min(ab.msd_pred_to_ref_mm, ab.msd_ref_to_pred_mm) <= ab.assd_mm + 1e-12
    assert ab.assd_mm <= max(ab.msd_pred_to_ref_mm, ab.msd_ref_to_pred_mm) + 1e-12
    self_ = metrics.surface_metrics(a, a, spacing_mm=spacing)
    assert self_.assd_mm == self_.hd_mm == self_.hd95_mm == 0.0
    ref = _brute_force_surface(a, b, spacing)
    for name, want in ref.items():
        assert getattr(ab, name) == pytest.approx(want, rel=1e-9, abs=1e-9), name


@PROPERTY
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(*[hnp.arrays(np.bool_, (n, n + 1, 4))] * 3)),
       st.tuples(*[finite(min_value=0.5, max_value=4.0)] * 3))
def test_hausdorff_distance_obeys_the_triangle_inequality(masks, spacing):
    """HD is a metric on non-empty surfaces: HD(a, c) <= HD(a, b) + HD(b, c)."""
    a, b, c = masks
    if not (a.any() and b.any() and c.any()):
        return
    hd = functools.partial(metrics.hausdorff, spacing_mm=spacing)
    assert hd(a, c) <= hd(a, b) + hd(b, c) + 1e-9


@PROPERTY
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(*[hnp.arrays(np.uint8, (n, 4, 5), elements=st.integers(0, 3))] * 2)),
       st.tuples(*[finite(min_value=0.5, max_value=4.0)] * 3))
def test_label_metrics_are_symmetric_and_agree_with_the_single_metric_functions(labels, spacing):
    """Per label, swapping pred and ref keeps DSC, ASSD, HD, HD95, MCD, swaps the directed distances and volumes,
    inverts RV, and every value equals the one-metric functions on that label's masks (label-box cropping is exact)."""
    p, r = labels
    pr = metrics.label_metrics(p, r, spacing_mm=spacing)
    rp = metrics.label_metrics(r, p, spacing_mm=spacing)
    assert set(pr) == set(rp) == ({int(v) for v in np.unique(p)} | {int(v) for v in np.unique(r)}) - {0}
    swapped = {"none": "none", "both": "both", "pred": "ref", "ref": "pred"}
    for lab, m in pr.items():
        n = rp[lab]
        for name in ("dsc", "assd_mm", "hd_mm", "hd95_mm", "mcd_mm"):
            assert getattr(m, name) == getattr(n, name), name
        assert (m.msd_pred_to_ref_mm, m.volume_pred_ml) == (n.msd_ref_to_pred_mm, n.volume_ref_ml)
        assert swapped[m.empty] == n.empty
        if m.empty == "none":
            assert m.rv * n.rv == pytest.approx(1.0)
        pm, rm = p == lab, r == lab
        surf = metrics.surface_metrics(pm, rm, spacing_mm=spacing)
        assert m.dsc == metrics.dice(pm, rm)
        assert m.rv == metrics.relative_volume(pm, rm)
        assert m.volume_pred_ml == pytest.approx(metrics.volume_ml(pm, spacing_mm=spacing))
        assert m.mcd_mm == pytest.approx(metrics.mcd(pm, rm, spacing_mm=spacing), abs=1e-9)
        for name in ("assd_mm", "hd_mm", "hd95_mm", "msd_pred_to_ref_mm", "msd_ref_to_pred_mm"):
            assert getattr(m, name) == pytest.approx(getattr(surf, name), abs=1e-9), name
        assert dataclasses.asdict(metrics.mask_metrics(pm, rm, spacing_mm=spacing)) == dataclasses.asdict(
            dataclasses.replace(m, label=1))


@PROPERTY
@given(grids(shape=(3, 4, 5)), hnp.arrays(np.bool_, (3, 4, 5)), st.tuples(*[finite(min_value=-50, max_value=50)] * 3))
def test_mass_centre_distance_is_symmetric_and_measures_a_world_shift(grid, mask, shift):
    """MCD of a mask and the same mask on a grid shifted by t (any direction and spacing) is |t|, in either order."""
    if not mask.any():
        return
    a = grid.with_array(mask.astype(np.uint8))
    b = make_volume(a.array, a.spacing_mm, np.asarray(a.origin_mm) + np.asarray(shift), a.direction)
    assert metrics.mcd(a, b) == metrics.mcd(b, a)
    assert metrics.mcd(a, b) == pytest.approx(float(np.linalg.norm(shift)), abs=1e-6)
    # the world centre is where index_to_world puts the voxels' mean index
    idx = np.argwhere(mask)[:, ::-1].mean(axis=0)
    np.testing.assert_allclose(metrics.mass_centre_mm(a), (index_to_world(a) @ np.append(idx, 1.0))[:3], atol=1e-9)


@PROPERTY
@given(grids(shape=(4, 5, 6), spacing=(0.5, 4.0)), st.tuples(*[finite(min_value=-0.3, max_value=0.3)] * 9))
def test_jacobian_of_an_affine_field_is_the_matrix_determinant(grid, linear):
    """det J of the displacement of p -> M p + t is det M at every voxel, on any oblique, anisotropic grid."""
    m = np.eye(3) + np.reshape(linear, (3, 3))
    aff = AffineTransform(jnp.asarray(m, jnp.float32), jnp.asarray([1.0, -2.0, 3.0]), jnp.asarray(grid.origin_mm, jnp.float32))
    field = grid.with_array(np.asarray(affine_displacement(aff, grid)))
    det = np.asarray(metrics.jacobian_determinant(field))
    np.testing.assert_allclose(det, np.linalg.det(m), rtol=0, atol=1e-3 * max(1.0, abs(np.linalg.det(m))))


# ----------------------------------------------------------------------------- dosimetry


@functools.cache
def _kernel(spacing: tuple[float, float, float]):
    return voxel_kernel(spacing)


DOSE_SPACINGS = [(s, s, s) for s in (2.21, 4.42, 6.8, 9.28)] + [(4.42, 4.42, 3.0), (3.3, 5.1, 2.6)]


@settings(PROPERTY, max_examples=15)
@given(_seeds(), st.sampled_from(DOSE_SPACINGS), finite(min_value=1e-3, max_value=1e3), st.sampled_from(sorted(constant_sets())))
def test_dose_is_linear_in_activity(seed, spacing, a, constants):
    """VSV and LDM dose of a * A is a times the dose of A, and the dose of A + B is the sum of the doses."""
    rng = np.random.default_rng(seed)
    act = (rng.gamma(0.5, 1e-3, (6, 7, 8)) * (rng.random((6, 7, 8)) < 0.5)).astype(np.float32)
    other = rng.gamma(1.0, 1e-3, act.shape).astype(np.float32)
    kernel = _kernel(spacing)
    vsv = functools.partial(dose_vsv, spacing_mm=spacing, constants=constants, kernel=kernel)
    d = np.asarray(vsv(act), np.float64)
    peak = float(d.max())
    # float32 FFT round-off is about 1e-6 of the peak (dosimetry.dose); a few times that is the tolerance
    np.testing.assert_allclose(np.asarray(vsv(act * np.float32(a)), np.float64), a * d, rtol=1e-5, atol=1e-5 * a * peak)
    both = np.asarray(vsv(act + other), np.float64)
    d2 = np.asarray(vsv(other), np.float64)
    np.testing.assert_allclose(both, d + d2, rtol=1e-5, atol=1e-5 * float(both.max()))
    ldm = functools.partial(dose_ldm, spacing_mm=spacing, constants=constants, density_g_ml=1.03)
    np.testing.assert_allclose(np.asarray(ldm(act * np.float32(a)), np.float64), a * np.asarray(ldm(act), np.float64),
                               rtol=2e-6, atol=0)


@pytest.mark.parametrize("constants", sorted(constant_sets()))
@settings(PROPERTY, max_examples=8)
@given(st.one_of(st.sampled_from([(s, s, s) for s in tabulated_voxel_sizes_mm()]),
                 st.tuples(*[finite(min_value=2.5, max_value=12.0)] * 3)),
       st.tuples(*[st.integers(1, 3)] * 3), _seeds(), st.booleans())
def test_vsv_dose_deposits_exactly_the_emitted_energy(constants, spacing, block, seed, with_density):
    """Energy closure: with every source at least the kernel's reach from the edges, sum(dose * mass) is the
    emitted energy (activity x dose factor) for any voxel shape and constant set, also under a density map
    (which changes the mass, not the energy), and the kernel's closure density is soft tissue (1.03 g/ml +- 0.5 %)."""
    kernel = _kernel(tuple(float(s) for s in spacing))
    half = [n // 2 for n in kernel.s_values.shape]  # (z, y, x)
    shape = tuple(2 * h + b for h, b in zip(half, block[::-1]))
    rng = np.random.default_rng(seed)
    act = np.zeros(shape, np.float32)
    act[half[0]:half[0] + block[2], half[1]:half[1] + block[1], half[2]:half[2] + block[0]] = rng.gamma(
        1.0, 1e-3, block[::-1])
    density = rng.uniform(0.3, 2.0, shape).astype(np.float32) if with_density else None
    dose = np.asarray(dose_vsv(act, spacing, constants=constants, density_g_ml=density, kernel=kernel), np.float64)
    rho = kernel.closure_density_g_ml() if density is None else density.astype(np.float64)
    mass_kg = rho * voxel_volume_ml(spacing) * 1e-3
    emitted_j = float(act.astype(np.float64).sum()) * get_constants(constants).gy_kg_per_gbq
    assert float((dose * mass_kg).sum()) == pytest.approx(emitted_j, rel=1e-5)
    assert kernel.closure_density_g_ml() == pytest.approx(1.03, abs=0.005)


@settings(PROPERTY, max_examples=20)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(
           hnp.arrays(np.float32, n, elements=st.one_of(st.sampled_from([0.0, 1.0, 50.0]),
                                                        st.floats(-5.0, 500.0, width=32, allow_subnormal=False))),
           hnp.arrays(np.int32, n, elements=st.integers(0, 3)))),
       st.sampled_from([16, 500]))
def test_cumulative_dvh_and_dx_vx_are_non_increasing(dose_labels, num_bins):
    """Per VOI the cumulative DVH never rises along the dose bins, lies in [0, 1], starts at the fraction of
    non-negative doses and differs from bin to bin by the (non-negative) differential DVH; D_x falls with x
    and V_x falls with the dose level."""
    dose, labels = dose_labels
    dx, vx = (0.0, 2.0, 50.0, 70.0, 98.0, 100.0), (-1.0, 0.0, 1.0, 50.0, 120.0)
    s = voi_statistics(dose, labels, voxel_volume_ml=0.1, num_labels=3, dose_levels_pct=dx, volume_levels_gy=vx,
                       num_bins=num_bins)
    assert np.all(np.diff(s.dvh_edges_gy) > 0)
    for i in range(3):
        v = dose[labels == i + 1]
        assert s.voxel_count[i] == v.size
        if v.size == 0:
            continue
        c = s.cdvh_fraction[i]
        assert np.all(np.diff(c) <= 1e-12), c
        assert np.all((c >= -1e-12) & (c <= 1 + 1e-12))
        assert c[0] == pytest.approx(np.mean(v >= 0), abs=1e-12)
        assert np.all(s.dvh_fraction[i] >= 0)
        np.testing.assert_allclose(c[:-1] - c[1:], s.dvh_fraction[i][:-1], atol=1e-12)
        assert np.all(np.diff(s.d_gy[i]) <= 0), s.d_gy[i]
        assert np.all(np.diff(s.v_pct[i]) <= 0), s.v_pct[i]
        assert s.max_gy[i] == v.max() and s.min_gy[i] == v.min()


def _liver_case(seed: int):
    """A SPECT-like counts image with a liver and a lesion mask on a 4.42 mm grid (small)."""
    rng = np.random.default_rng(seed)
    grid = make_volume(np.zeros((9, 10, 11), np.float32), (4.42, 4.42, 4.42), (-20.0, 5.0, -30.0))
    liver = np.zeros(grid.shape, np.uint8)
    liver[2:7, 2:8, 2:9] = 1
    lesion = np.zeros(grid.shape, np.uint8)
    lesion[3:5, 3:5, 3:6] = 1
    counts = rng.poisson(30.0, grid.shape).astype(np.float32) * (1.0 + 4.0 * lesion)
    return grid.with_array(counts), grid.with_array(liver), grid.with_array(lesion)


@settings(PROPERTY, max_examples=6)
@given(_seeds(), finite(min_value=0.1, max_value=5.0), finite(min_value=0.01, max_value=100.0),
       finite(min_value=1e-3, max_value=1e3), st.sampled_from(["vsv", "ldm"]))
def test_study_dose_scales_with_the_administered_activity_not_with_counts(seed, gbq, a, counts_scale, model):
    """voxel_dosimetry from SPECT counts: a times the administered activity gives a times the dose map and
    statistics; scaling the counts changes nothing (they are normalised); every VOI's cumulative DVH falls."""
    counts, liver, lesion = _liver_case(seed)
    run = functools.partial(voxel_dosimetry, liver=liver, lesions=lesion, input_kind="counts", lung_shunt_fraction=0.05,
                            model=model, num_bins=64)
    base = run(counts, activity_gbq=gbq)
    d = np.asarray(base.dose.array, np.float64)
    scaled = np.asarray(run(counts, activity_gbq=gbq * a).dose.array, np.float64)
    np.testing.assert_allclose(scaled, a * d, rtol=1e-5, atol=1e-5 * a * d.max())
    recount = np.asarray(run(counts.with_array(counts.array * np.float32(counts_scale)), activity_gbq=gbq).dose.array, np.float64)
    np.testing.assert_allclose(recount, d, rtol=1e-5, atol=1e-5 * d.max())
    assert run(counts, activity_gbq=gbq * a).statistics.mean_gy == pytest.approx(a * base.statistics.mean_gy, rel=1e-5)
    assert np.all(np.diff(base.statistics.cdvh_fraction, axis=1) <= 1e-12)


# ----------------------------------------------------------------------------- registration


def _smooth_image(grid: Volume, seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    return grid.with_array((ndi.gaussian_filter(rng.normal(size=grid.shape), 1.5) * 100).astype(np.float32))


SELF_REGISTRATION = RegistrationConfig(pyramid=Pyramid(levels=1, finest_mm=None), regulariser=Regulariser(neighbourhood=6),
                                       affine=AffineStage(iterations=30, candidates=1), stages=())


@settings(PROPERTY, max_examples=6)
@given(grids(shape=(10, 10, 10), spacing=(2.0, 4.0), origin=200.0), _seeds())
def test_image_registered_to_itself_keeps_the_affine_stage_at_the_identity(grid, seed):
    """register(I, I), affine stage (MI): the displacement stays below a quarter of the smallest voxel everywhere."""
    img = _smooth_image(grid, seed)
    res = register(img, img, config=SELF_REGISTRATION)
    u = np.linalg.norm(np.asarray(res.displacement.array), axis=-1)
    assert u.max() < 0.25 * float(np.min(img.spacing_mm)), u.max()


@settings(PROPERTY, max_examples=6, phases=[Phase.explicit, Phase.generate])
@given(grid=grids(shape=(10, 10, 10), spacing=(2.0, 4.0), origin=200.0), seed=_seeds())
def test_image_registered_to_itself_with_ssd_stays_at_the_identity_inside(grid, seed):
    """register(I, I) with SSD (global minimum 0 at the identity), the default optimiser (Adam) and the default
    schedule (100 affine, 60 non-rigid steps), 2 voxels or more inside the grid: below a quarter of a voxel on
    average and below one voxel everywhere. Adam ends within about its final step size of an optimum, not on it.
    Its border drift (the xfail below) reaches in: the examples Hypothesis drew have changed between runs, and
    on two of these 10-voxel oblique grids (seeds 1190, 4522129) it moved voxels 0.63 and 0.52 voxel there, where
    most stay under 0.35 (averages up to 0.14)."""
    img = _smooth_image(grid, seed)
    config = RegistrationConfig(pyramid=Pyramid(levels=1, finest_mm=None), similarity=Similarity(metric="ssd"),
                                regulariser=Regulariser(neighbourhood=6), affine=AffineStage(candidates=1),
                                stages=(NonrigidStage(levels=1),))
    u = np.linalg.norm(np.asarray(register(img, img, config=config).displacement.array), axis=-1)
    inner = u[2:-2, 2:-2, 2:-2] / float(np.min(img.spacing_mm))
    assert inner.mean() < 0.25 and inner.max() < 1.0, (inner.mean(), inner.max())


@pytest.mark.parametrize("optimiser", [
    pytest.param("adam", marks=pytest.mark.xfail(strict=True, reason=(
        "known limitation, as in elastix: samples mapped outside the moving image leave the similarity's mean, so "
        "the border voxels of a 10-voxel grid lower the loss by moving out (up to ~1.2 voxels here); Adam, not a "
        "descent method, takes those steps"))),
    "lbfgs",
])
@settings(PROPERTY, max_examples=6, phases=[Phase.explicit, Phase.generate])
@given(grid=grids(shape=(10, 10, 10), spacing=(2.0, 4.0), origin=200.0), seed=_seeds())
def test_image_registered_to_itself_with_ssd_stays_at_the_identity_everywhere(optimiser, grid, seed):
    """register(I, I), affine + non-rigid with SSD, a short schedule: displacement < half a voxel on the whole grid,
    borders included. L-BFGS, a descent method with a line search, does not leave the optimum (about 1e-5 voxel)."""
    img = _smooth_image(grid, seed)
    config = dataclasses.replace(SELF_REGISTRATION, similarity=Similarity(metric="ssd"), optimiser=optimiser,
                                 stages=(NonrigidStage(levels=1, iterations=20),))
    res = register(img, img, config=config)
    u = np.linalg.norm(np.asarray(res.displacement.array), axis=-1)
    assert u.max() < 0.5 * float(np.min(img.spacing_mm)), u.max()


# ----------------------------------------------------------------------------- composition vs SimpleITK


@st.composite
def affines(draw) -> AffineTransform:
    """A random affine near a rotation (scales 0.9-1.1), translation up to 5 mm, centre anywhere near the origin."""
    r = draw(rotations(reflect=False))
    scales = draw(st.tuples(*[finite(min_value=0.9, max_value=1.1)] * 3))
    rotvec = Rotation.from_matrix(r).as_rotvec() * 0.2  # at most ~36 degrees
    matrix = Rotation.from_rotvec(rotvec).as_matrix() @ np.diag(scales)
    t = draw(st.tuples(*[finite(min_value=-5.0, max_value=5.0)] * 3))
    c = draw(st.tuples(*[finite(min_value=-20.0, max_value=20.0)] * 3))
    return AffineTransform(jnp.asarray(matrix, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(c, jnp.float32))


def _sitk_affine(aff: AffineTransform) -> sitk.Transform:
    """ITK's affine has sirtjax's form, T(p) = M (p - c) + c + t."""
    t = sitk.AffineTransform(3)
    t.SetMatrix(np.asarray(aff.matrix, np.float64).ravel().tolist())
    t.SetTranslation(np.asarray(aff.translation_mm, np.float64).tolist())
    t.SetCenter(np.asarray(aff.centre_mm, np.float64).tolist())
    return t


def _sitk_field(field: Volume) -> sitk.Transform:
    return sitk.DisplacementFieldTransform(sitk.Cast(io.to_sitk(field), sitk.sitkVectorFloat64))


def _voxel_points(grid: Volume) -> np.ndarray:
    """World points (N, 3) float64 of every voxel centre, C order of the (z, y, x) array."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij")
    idx = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)], -1)
    return (idx @ index_to_world(grid).T)[:, :3]


def _clear_of_the_edge(grid: Volume, points: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Points whose continuous index is not within margin of the grid's half-voxel boundary (where float32 and
    float64 may disagree on inside / outside)."""
    idx = (np.c_[points, np.ones(len(points))] @ world_to_index(grid).T)[:, :3]
    size = np.asarray(grid.shape[::-1], float)
    near = (np.abs(idx + 0.5) < margin) | (np.abs(idx - (size - 0.5)) < margin)
    return ~near.any(axis=1)


FIXED_SHAPE, FIELD_SHAPE, MOVING_SHAPE = (4, 5, 6), (5, 6, 6), (7, 8, 6)


@settings(PROPERTY, max_examples=20)
@given(grids(shape=FIXED_SHAPE, spacing=(1.0, 3.0), origin=8.0), grids(shape=FIELD_SHAPE, spacing=(2.5, 5.0), origin=8.0),
       grids(shape=MOVING_SHAPE, spacing=(2.0, 5.0), origin=8.0), affines(), _seeds(), st.booleans())
def test_composed_displacements_match_simpleitk_composite_transform(fixed, field_grid, moving_grid, aff, seed, affine_first):
    """compose_displacements(first, second) maps p to T2(T1(p)) exactly as sitk.CompositeTransform([T2, T1]), for an
    affine and a displacement field on its own oblique grid, in either order; warping a moving image through the
    composed field equals sitk.Resample through the composite."""
    rng = np.random.default_rng(seed)
    # centre the other grids on the fixed one so that most points land inside them
    centre = _voxel_points(fixed).mean(axis=0)
    field_grid, moving_grid = (make_volume(g.array, g.spacing_mm, np.asarray(g.origin_mm) + centre - _voxel_points(g).mean(axis=0),
                                           g.direction) for g in (field_grid, moving_grid))
    field = field_grid.with_array(rng.uniform(-3.0, 3.0, FIELD_SHAPE + (3,)).astype(np.float32))
    p = _voxel_points(fixed)
    if affine_first:  # T1 the affine (as its field on the fixed grid), T2 the field on its own grid
        first, second = fixed.with_array(np.asarray(affine_displacement(aff, fixed))), field
        sitk_t1, sitk_t2 = _sitk_affine(aff), _sitk_field(field)
        ok = np.ones(len(p), bool)
    else:  # T1 the field (sampled at the fixed voxels: composed onto a zero field), T2 the affine
        first = compose_displacements(fixed.with_array(np.zeros(FIXED_SHAPE + (3,), np.float32)), field)
        # the affine as a field on a grid around every point T1 reaches: linear, so trilinear interpolation is exact
        cover = make_volume(np.zeros((12, 12, 12), np.float32), (6.0, 6.0, 6.0), centre - 33.0)
        second = cover.with_array(np.asarray(affine_displacement(aff, cover)))
        sitk_t1, sitk_t2 = _sitk_field(field), _sitk_affine(aff)
        ok = _clear_of_the_edge(field_grid, p)
    composed = compose_displacements(first, second)
    composite = sitk.CompositeTransform([sitk_t2, sitk_t1])  # the last one listed acts first

    t1 = p + np.asarray(first.array, np.float64).reshape(-1, 3)
    ok &= _clear_of_the_edge(second, t1)
    ours = p + np.asarray(composed.array, np.float64).reshape(-1, 3)
    ref = np.array([composite.TransformPoint(tuple(x)) for x in p])
    np.testing.assert_allclose(ours[ok], ref[ok], atol=2e-3)  # float32 fields and points against ITK's float64

    moving = moving_grid.with_array((ndi.gaussian_filter(rng.normal(size=MOVING_SHAPE), 1.0) * 10).astype(np.float32))
    want = sitk.GetArrayFromImage(sitk.Resample(io.to_sitk(moving), io.to_sitk(fixed), composite, sitk.sitkLinear, 0.0))
    got = np.asarray(warp_volume(moving, composed).array)
    ok &= _clear_of_the_edge(moving, ref)
    np.testing.assert_allclose(got.ravel()[ok], want.ravel()[ok], atol=2e-3)


# ----------------------------------------------------------------------------- I/O round trips


def _same_image_in_patient_space(back: Volume, vol: Volume, tol: float) -> None:
    """Every voxel centre of back is a voxel centre of vol (within 1e-6 of an index) holding the same value (within
    tol), and back has as many voxels: the two describe one image, however their arrays are ordered."""
    idx = (np.c_[_voxel_points(back), np.ones(back.array.size)] @ world_to_index(vol).T)[:, :3]
    ijk = np.rint(idx).astype(int)
    np.testing.assert_allclose(idx, ijk, atol=1e-6)
    assert np.all((ijk >= 0) & (ijk < np.asarray(vol.shape[::-1])))
    assert len({tuple(v) for v in ijk}) == vol.array.size
    want = np.asarray(vol.array, np.float64)[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    np.testing.assert_allclose(np.asarray(back.array, np.float64).ravel(), want, atol=tol, rtol=0)


@settings(PROPERTY, max_examples=20)
@given(grids(), st.sampled_from([np.uint8, np.int16, np.float32]), _seeds())
def test_any_grid_round_trips_through_nifti_and_mha(grid, dtype, seed):
    """write_volume / read_volume keep voxel type, values, spacing, origin and direction (rotations, reflections,
    anisotropic spacing, single-voxel axes): exactly for MHA, to NIfTI's float32 header precision for .nii.gz."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    arr = (rng.integers(info.min, info.max, grid.shape, endpoint=True) if info else rng.normal(0, 1e3, grid.shape)).astype(dtype)
    vol = grid.with_array(arr)
    with tempfile.TemporaryDirectory() as tmp:
        # (file, relative tolerance of spacing, mm tolerance of origin, tolerance of direction entries)
        for name, rtol_spacing, atol_origin, atol_direction in (("v.mha", 1e-12, 1e-9, 1e-12),
                                                                 ("v.nii.gz", 1e-6, 1e-4, 1e-6)):  # float32 header
            path = io.write_volume(vol, Path(tmp) / name)
            back = io.read_volume(path)
            assert back.array.dtype == arr.dtype and back.shape == vol.shape, name
            np.testing.assert_array_equal(back.array, arr)
            np.testing.assert_allclose(back.spacing_mm, vol.spacing_mm, rtol=rtol_spacing, err_msg=name)
            np.testing.assert_allclose(back.origin_mm, vol.origin_mm, atol=atol_origin, err_msg=name)
            np.testing.assert_allclose(back.direction, vol.direction, atol=atol_direction, err_msg=name)


@settings(PROPERTY, max_examples=12)
@given(grids(shape=st.tuples(st.integers(1, 4), st.integers(2, 4), st.integers(1, 4))),  # one row: see the xfail below
       st.sampled_from([np.int16, np.float32]), _seeds())
def test_any_grid_round_trips_through_a_dicom_series(grid, dtype, seed):
    """A DICOM series folder written by write_volume reads back as the same image in patient space: every voxel's
    world position and value (float32 to the documented int16 quantisation, range / 64000). A right-handed grid
    comes back with the same array and geometry; a left-handed one (DICOM implies the slice normal) may come back
    as its z-flipped right-handed equivalent. A single slice cannot carry its z spacing."""
    rng = np.random.default_rng(seed)
    arr = (rng.integers(-32768, 32767, grid.shape, endpoint=True) if dtype is np.int16
           else rng.normal(0, 300, grid.shape)).astype(dtype)
    vol = grid.with_array(arr)
    tol = float(np.ptp(arr)) / 64000 + 1e-6 if dtype is np.float32 else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        io.write_volume(vol, Path(tmp) / "series")
        back = io.read_volume(Path(tmp) / "series")
    assert back.shape == vol.shape
    np.testing.assert_allclose(back.spacing_mm[:2], vol.spacing_mm[:2], rtol=1e-9)
    if vol.shape[0] > 1:
        np.testing.assert_allclose(back.spacing_mm[2], vol.spacing_mm[2], rtol=1e-9)
    else:  # one slice: only the slice itself is defined; give the read-back volume the written z spacing
        back = make_volume(back.array, (*back.spacing_mm[:2], vol.spacing_mm[2]), back.origin_mm, back.direction)
    _same_image_in_patient_space(back, vol, tol)
    if np.linalg.det(vol.direction) > 0:
        np.testing.assert_allclose(back.direction, vol.direction, atol=1e-9)
        np.testing.assert_allclose(back.origin_mm, vol.origin_mm, atol=1e-6)
        np.testing.assert_allclose(np.asarray(back.array, np.float64), arr.astype(np.float64), atol=tol, rtol=0)


def test_a_dicom_series_of_one_row_slices_is_refused_not_misread():
    """A (z, 1, x) volume as a DICOM series: ITK would stack its one-row slices along y; sirtjax refuses it."""
    vol = make_volume(np.arange(6, dtype=np.int16).reshape(2, 1, 3), (0.7, 1.3, 2.9), (10.0, -20.0, 30.0))
    with tempfile.TemporaryDirectory() as tmp:
        io.write_volume(vol, Path(tmp) / "series")
        with pytest.raises(InputError, match="not supported"):
            io.read_volume(Path(tmp) / "series")

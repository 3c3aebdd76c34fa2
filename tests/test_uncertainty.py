"""The dose-uncertainty ensemble: its nominal member is the plan's dose, and its intervals cover the truth."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from sirtjax.dosimetry.uncertainty import SOURCES, UncertaintyModel, activity_for_target, ensemble, summarise
from sirtjax.dosimetry.voxel import voxel_dosimetry
from sirtjax.volume import make_volume

SPACING = (4.0, 4.5, 5.0)  # x, y, z mm


def _ellipsoid(shape, radii_mm, offset_mm: float = 0.0) -> np.ndarray:
    """An ellipsoid centred in the grid, its semi-axes (z, y, x mm) grown by offset_mm (an analytic outline)."""
    zyx = [(np.arange(n) - n / 2) * h for n, h in zip(shape, SPACING[::-1])]
    z, y, x = np.meshgrid(*zyx, indexing="ij")
    rz, ry, rx = (r + offset_mm for r in radii_mm)
    return (z / rz) ** 2 + (y / ry) ** 2 + (x / rx) ** 2 <= 1


def _study(seed: int, shape=(26, 30, 34)):
    """Counts in an ellipsoidal liver with one or two hotter lesions (ids 2, 7), random sizes and uptake; and the
    liver's semi-axes (mm)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=float)
    c = np.asarray(shape) / 2
    radii = rng.uniform(0.55, 0.8, 3) * c
    radii_mm = tuple(radii * np.asarray(SPACING[::-1]))
    liver = _ellipsoid(shape, radii_mm)
    lesions = np.zeros(shape, np.int32)
    for k, lesion_id in enumerate((2, 7)[: rng.integers(1, 3)]):
        centre = c + rng.uniform(-0.3, 0.3, 3) * radii
        r = rng.uniform(2.0, 4.0)
        lesions[((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= r * r] = lesion_id
    lesions[~liver] = 0
    counts = rng.poisson(20 * liver + rng.uniform(2, 6) * 20 * (lesions > 0) + 0.5).astype(np.float32)
    return counts, liver.astype(np.uint8), lesions, radii_mm


def _vol(a):
    return make_volume(a, SPACING, (-60.0, 20.0, -100.0), np.eye(3))


@pytest.mark.parametrize("dose_model", ["vsv", "ldm"])
def test_nominal_member_is_the_dose_of_voxel_dosimetry(dose_model):
    counts, liver, lesions, _ = _study(3)
    model = UncertaintyModel(calibration_rel_sd=0.05, lung_shunt_sd=0.02, boundary_sd_mm=0.5)
    e = ensemble(_vol(counts), _vol(liver), _vol(lesions), activity_gbq=0.3, lung_shunt_fraction=0.08, model=model,
                 key=jax.random.key(0), n=16, dose_model=dose_model)
    ref = voxel_dosimetry(_vol(counts), _vol(liver), lesions=_vol(lesions.astype(np.uint16)), activity_gbq=0.3,
                          lung_shunt_fraction=0.08, model=dose_model)
    records = {r["name"]: r for r in ref.report["vois"]}
    assert set(e.names) <= set(records)
    for v, name in enumerate(e.names):
        assert e.nominal[v, 0] == pytest.approx(records[name]["mean_gy"], rel=1e-4)
        assert e.nominal[v, 1] == pytest.approx(records[name]["D70_gy"], rel=1e-4)
        assert e.nominal[v, 2] == pytest.approx(records[name]["V100_pct"], abs=1e-3)
    assert set(e.by_source) == {"calibration", "lung_shunt", "liver_boundary", "lesion_boundary"}
    summary = summarise(e)
    liver_mean = summary[0]["mean_gy"]
    assert liver_mean["p5"] < liver_mean["nominal"] < liver_mean["p95"]
    # 5 % on the activity moves the mean by 5 %; 0.5 mm on a liver of about 45 mm radius by about 3 x 0.5 / 45 = 3 %
    assert liver_mean["dominant"] == "calibration"
    calibration = liver_mean["by_source"]["calibration"]
    assert (calibration["p95"] - calibration["p5"]) / liver_mean["nominal"] == pytest.approx(2 * 1.645 * 0.05, rel=0.4)


def test_one_source_at_a_time_varies_only_that_source():
    counts, liver, lesions, _ = _study(4)
    e = ensemble(_vol(counts), _vol(liver), _vol(lesions), activity_gbq=2.0, lung_shunt_fraction=0.1,
                 model=UncertaintyModel(calibration_rel_sd=0.05, boundary_sd_mm=3.0), key=jax.random.key(1), n=16,
                 dose_model="ldm")
    # calibration scales every dose by the same factor: the normal liver's mean / D70 ratio stays put
    cal = e.by_source["calibration"]
    np.testing.assert_allclose(cal[:, 1, 0] / cal[:, 1, 1], e.nominal[1, 0] / e.nominal[1, 1], rtol=1e-4)
    # a lesion boundary inside the liver moves the lesion's VOI, not the liver region: the liver's mean stays put,
    # and a lesion eroded away leaves its metrics undefined (NaN) in that member
    les = e.by_source["lesion_boundary"]
    np.testing.assert_allclose(les[:, 0, 0], e.nominal[0, 0], rtol=1e-5)
    assert np.nanmax(les[:, 2, 0]) - np.nanmin(les[:, 2, 0]) > 0
    with pytest.raises(ValueError, match="residual_fraction"):
        UncertaintyModel(residual_fraction=1.0)
    assert SOURCES[0] == "calibration"


def test_intervals_cover_the_true_dose_at_about_their_nominal_rate():
    """24 studies whose true activity, LSF and liver outline differ from the observed ones by errors of the
    stated size (the liver drawn again as an ellipsoid with semi-axes off by the error, not through the
    ensemble's distance maps): the 5-95 % interval of the normal liver's mean dose, built around the observed
    inputs, should hold the truth in about 90 % of them."""
    model = UncertaintyModel(calibration_rel_sd=0.06, lung_shunt_sd=0.03, boundary_sd_mm=3.0)
    covered = []
    for seed in range(24):
        rng = np.random.default_rng(100 + seed)
        counts, liver_true, lesions, radii_mm = _study(100 + seed)
        a_true, lsf_true = 2.0, 0.1
        truth = voxel_dosimetry(_vol(counts), _vol(liver_true), lesions=_vol(lesions.astype(np.uint16)),
                                activity_gbq=a_true, lung_shunt_fraction=lsf_true, model="ldm")
        true_mean = next(r["mean_gy"] for r in truth.report["vois"] if r["name"] == "normal_liver")
        a_obs = a_true * (1 + model.calibration_rel_sd * rng.normal())
        lsf_obs = float(np.clip(lsf_true + model.lung_shunt_sd * rng.normal(), 0, 0.9))
        liver_obs = _ellipsoid(counts.shape, radii_mm, model.boundary_sd_mm * rng.normal())
        e = ensemble(_vol(counts), _vol(liver_obs.astype(np.uint8)), _vol(lesions), activity_gbq=a_obs,
                     lung_shunt_fraction=lsf_obs, model=model, key=jax.random.key(seed), n=40, dose_model="ldm",
                     tornado=False)
        p5, p95 = np.percentile(e.all[:, 1, 0], [5, 95])
        covered.append(p5 <= true_mean <= p95)
    print(f"coverage {np.mean(covered):.2f} of {len(covered)}")
    assert 0.75 <= np.mean(covered) <= 1.0, covered


def test_activity_for_the_normal_liver_target_is_the_partition_models_and_moves_against_the_calibration():
    """With the local-deposition dose, the nominal activity for a normal-liver target is the partition model's
    (thesis eq. 1.5-1.9, from the measured T/N ratios: computed by another module); a member whose calibration
    reads c times the activity needs 1/c of it."""
    from sirtjax.dosimetry import measure_compartments, partition
    from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML

    counts, liver, lesions, _ = _study(6)
    activity, lsf, target = 1.7, 0.07, 45.0
    e = ensemble(_vol(counts), _vol(liver), _vol(lesions), activity_gbq=activity, lung_shunt_fraction=lsf,
                 model=UncertaintyModel(calibration_rel_sd=0.05, lung_shunt_sd=0.02), key=jax.random.key(3), n=24,
                 dose_model="ldm")
    needed = activity_for_target(e, "normal_liver", target, activity)
    measured = measure_compartments(_vol(counts), _vol(liver), lesions=_vol(lesions))
    kg = LIVER_DENSITY_G_ML * 1e-3
    reference = partition(target, measured.normal_volume_ml * kg, list(measured.tumour_volume_ml * kg),
                          list(measured.tn_ratios), lung_shunt_fraction=lsf)
    assert needed["nominal"] == pytest.approx(reference.activity_gbq, rel=1e-4)
    assert needed["voi"] == "normal_liver" and needed["target_gy"] == target
    assert needed["p5"] < needed["nominal"] < needed["p95"] and needed["dominant"] == "calibration"
    mean = e.by_source["calibration"][:, 1, 0]
    scale = mean / e.nominal[1, 0]  # each member's calibration factor
    np.testing.assert_allclose(np.percentile(activity * target / mean, [5, 95]),
                               [needed["by_source"]["calibration"][k] for k in ("p5", "p95")], rtol=1e-5)
    assert np.all(np.abs(scale - 1) < 0.25)


def test_registration_alternatives_are_drawn_as_a_source():
    """Lesion maps of other registrations: the nominal member keeps the plan's, the registration source picks among
    all of them, and a lesion displaced into colder liver reads a lower mean dose there."""
    counts, liver, lesions, _ = _study(5)
    shifted = np.roll(lesions, 3, axis=2)
    shifted[liver == 0] = 0
    e = ensemble(_vol(counts), _vol(liver), _vol(lesions), activity_gbq=0.3, lung_shunt_fraction=0.1,
                 model=UncertaintyModel(calibration_rel_sd=0.05), key=jax.random.key(2), n=16, dose_model="ldm",
                 lesion_alternatives=[_vol(shifted)])
    assert set(e.by_source) == {"calibration", "registration"}
    reg = e.by_source["registration"][:, 2, 0]  # the first lesion's mean dose
    assert np.isclose(reg, e.nominal[2, 0], rtol=1e-5).any() and (reg < 0.8 * e.nominal[2, 0]).any()
    assert summarise(e)[2]["mean_gy"]["dominant"] == "registration"


def test_residual_and_density_keep_the_nominal_member_the_tables():
    """An expected residual varies around the activity given (the nominal keeps it), and the LDM density is the table's."""
    counts, liver, lesions, _ = _study(6)
    model = UncertaintyModel(residual_fraction=0.1, residual_sd=0.05)
    e = ensemble(_vol(counts), _vol(liver), _vol(lesions), activity_gbq=0.3, lung_shunt_fraction=0.05, model=model,
                 key=jax.random.key(3), n=16, dose_model="ldm", liver_density_g_ml=1.2)
    ref = voxel_dosimetry(_vol(counts), _vol(liver), lesions=_vol(lesions.astype(np.uint16)), activity_gbq=0.3,
                          lung_shunt_fraction=0.05, model="ldm", liver_density_g_ml=1.2)
    assert e.nominal[0, 0] == pytest.approx(ref.report["vois"][0]["mean_gy"], rel=1e-4)
    spread = e.by_source["residual"][:, 0, 0] / e.nominal[0, 0]  # (1 - r) / 0.9 with r ~ N(0.1, 0.05)
    assert 0.05 / 0.9 * 0.5 < spread.std() < 0.05 / 0.9 * 1.6


@pytest.mark.parametrize("dose_model", ["vsv", "ldm"])
def test_pet_ensemble_nominal_is_the_pet_dose_and_calibration_scales_it(dose_model):
    """A 90Y PET in Bq/ml (activity_gbq None): the nominal member is voxel_dosimetry's PET dose, with the activity
    outside the liver and within the kernel's reach counted; the lung shunt does not apply."""
    counts, liver, lesions, _ = _study(7)
    pet = counts * 2e4 + 500.0  # Bq/ml, with activity outside the liver too
    model = UncertaintyModel(calibration_rel_sd=0.1, lung_shunt_sd=0.05, boundary_sd_mm=1.0)
    e = ensemble(_vol(pet), _vol(liver), _vol(lesions), activity_gbq=None, lung_shunt_fraction=0.0, model=model,
                 key=jax.random.key(4), n=12, dose_model=dose_model)
    ref = voxel_dosimetry(_vol(pet), _vol(liver), lesions=_vol(lesions.astype(np.uint16)), input_kind="bq-per-ml",
                          model=dose_model)
    records = {r["name"]: r for r in ref.report["vois"]}
    for v, name in enumerate(e.names):
        assert e.nominal[v, 0] == pytest.approx(records[name]["mean_gy"], rel=1e-4)
    assert "lung_shunt" not in e.by_source
    cal = e.by_source["calibration"]
    np.testing.assert_allclose(cal[:, 0, 0] / e.nominal[0, 0], cal[:, 1, 0] / e.nominal[1, 0], rtol=1e-4)  # one factor


def test_voi_metrics_d70_is_the_sorted_doses_rank_value():
    """D70 (bisection on bit patterns) is numpy's sorted value at rank ceil(0.7 n), hottest first, exactly; mean and
    V100 as numpy gives them; an empty VOI is NaN. Doses span zeros, ties and nine decades."""
    from sirtjax.dosimetry.uncertainty import _voi_metrics

    rng = np.random.default_rng(3)
    dose = (10.0 ** rng.uniform(-4, 5, (12, 14, 16))).astype(np.float32)
    dose[rng.random(dose.shape) < 0.1] = 0.0
    dose[rng.random(dose.shape) < 0.1] = 150.0
    masks = np.stack([rng.random(dose.shape) < p for p in (0.9, 0.3, 0.01)] + [np.zeros(dose.shape, bool)])
    got = np.asarray(_voi_metrics(jax.numpy.asarray(dose), jax.numpy.asarray(masks)))
    for v in range(3):
        vals = np.sort(dose[masks[v]])[::-1]
        rank = max(1, (70 * vals.size + 99) // 100)
        assert got[v, 1] == vals[rank - 1]
        assert got[v, 0] == pytest.approx(vals.mean(), rel=1e-5)
        assert got[v, 2] == pytest.approx(100.0 * np.mean(vals >= 100.0), rel=1e-6)
    assert np.isnan(got[3]).all()

"""Per-VOI dose statistics against an independent sort-based numpy computation."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sirtjax.dosimetry.statistics import rank_for_percent, voi_statistics


def reference_d(values: np.ndarray, x_pct: float) -> float:
    """D_x by the definition, with exact rational arithmetic: the ceil(x n / 100)-th largest dose."""
    v = np.sort(values)[::-1]
    k = max(1, -(-Fraction(x_pct).limit_denominator(10**6) * len(v) // 100))
    return float(v[min(int(k), len(v)) - 1])


def check_against_numpy(dose, labels, num_labels, dx, vx, voxel_ml=0.5):
    st_ = voi_statistics(dose, labels, voxel_volume_ml=voxel_ml, num_labels=num_labels, dose_levels_pct=dx,
                         volume_levels_gy=vx, num_bins=64)
    for lab in range(1, num_labels + 1):
        v = dose[labels == lab].astype(np.float64)
        i = lab - 1
        assert st_.voxel_count[i] == v.size
        assert st_.volume_ml[i] == pytest.approx(v.size * voxel_ml)
        if v.size == 0:
            assert np.isnan(st_.mean_gy[i]) and np.all(np.isnan(st_.d_gy[i])) and np.all(np.isnan(st_.v_pct[i]))
            continue
        assert st_.mean_gy[i] == pytest.approx(v.mean(), rel=1e-5, abs=1e-6)  # float32 block sums
        assert st_.min_gy[i] == np.float32(v.min()) and st_.max_gy[i] == np.float32(v.max())  # exact selection
        for j, x in enumerate(dx):
            assert st_.d_gy[i, j] == reference_d(v, x), f"D{x} of label {lab}"
        for j, x in enumerate(vx):
            assert st_.v_pct[i, j] == pytest.approx(100.0 * np.mean(v >= np.float32(x)), abs=1e-9)
        # cumulative DVH at each bin edge: fraction with dose >= edge
        edges = st_.dvh_edges_gy[:-1]
        want = (v[None, :] >= edges[:, None].astype(np.float32)).mean(axis=1)
        np.testing.assert_allclose(st_.cdvh_fraction[i], want, atol=1.5 / v.size)  # an edge may split equal values
        assert st_.dvh_fraction[i].sum() == pytest.approx(np.mean(v >= 0))  # negatives lie below the grid
    return st_


def test_statistics_match_numpy_with_ties_and_empty_labels():
    rng = np.random.default_rng(0)
    dose = rng.gamma(2.0, 30.0, (20, 25, 30)).astype(np.float32)
    dose[0, :, :] = 50.0  # a plateau of ties
    labels = rng.integers(0, 7, dose.shape).astype(np.int16)
    labels[labels == 4] = 0  # label 4 is empty
    st_ = check_against_numpy(dose, labels, 6, (70, 50, 2.5, 99.9, 100, 0), (70, 100, 120, 0))
    assert st_.dvh_edges_gy[-1] >= dose.max()


def test_d70_definition_on_a_small_example():
    # 10 voxels with doses 1..10 Gy: the hottest 70 % are 4..10, whose minimum is 4 Gy
    dose = np.arange(1, 11, dtype=np.float32)
    st_ = voi_statistics(dose, np.ones(10, np.int32), voxel_volume_ml=1.0, dose_levels_pct=(70, 50, 5, 100))
    np.testing.assert_array_equal(st_.d_gy[0], [4.0, 6.0, 10.0, 1.0])
    np.testing.assert_array_equal(st_.v_pct[0], [0.0, 0.0, 0.0])
    st2 = voi_statistics(dose, np.ones(10, np.int32), voxel_volume_ml=1.0, volume_levels_gy=(4, 4.5, 10))
    np.testing.assert_array_equal(st2.v_pct[0], [70.0, 60.0, 10.0])  # V_x counts dose >= x
    assert rank_for_percent(10, 70) == 7 and rank_for_percent(3, 33.3) == 1 and rank_for_percent(7, 0) == 1


def test_negative_and_large_doses_and_concatenated_overlapping_vois():
    rng = np.random.default_rng(5)
    dose = np.concatenate([rng.normal(0, 5, 500), rng.gamma(1.0, 400.0, 500)]).astype(np.float32)
    labels = np.repeat([1, 2], 500).astype(np.int32)
    # an overlapping "union" VOI given by concatenation
    dose_all = np.concatenate([dose, dose])
    labels_all = np.concatenate([labels, np.full(1000, 3, np.int32)])
    check_against_numpy(dose_all, labels_all, 3, (70, 50, 10), (0, 100, 1000))


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(70.0,), (33.3, 66.7), (0.5, 99.5, 50.0)]))
def test_property_random_volumes(seed, dx):
    rng = np.random.default_rng(seed)
    n = 600
    dose = (rng.random(n) * 10 ** rng.uniform(-2, 3)).astype(np.float32)
    dose[rng.random(n) < 0.2] = dose[0]  # ties
    labels = rng.integers(0, 4, n).astype(np.int32)
    check_against_numpy(dose, labels, 3, dx, (float(np.median(dose)),))


def test_errors():
    with pytest.raises(ValueError, match="NaN"):
        voi_statistics(np.array([1.0, np.nan], np.float32), np.array([1, 1]), voxel_volume_ml=1.0)
    with pytest.raises(ValueError, match="no VOI"):
        voi_statistics(np.ones(3, np.float32), np.zeros(3, np.int32), voxel_volume_ml=1.0)
    with pytest.raises(ValueError, match="percentages"):
        voi_statistics(np.ones(3, np.float32), np.ones(3, np.int32), voxel_volume_ml=1.0, dose_levels_pct=(120,))
    with pytest.raises(ValueError, match="integers"):
        voi_statistics(np.ones(3, np.float32), np.ones(3, np.float32), voxel_volume_ml=1.0)


def test_records_turn_empty_vois_into_none():
    st_ = voi_statistics(np.ones(4, np.float32), np.array([1, 1, 0, 0]), voxel_volume_ml=2.0, num_labels=2)
    rec = st_.to_records(["a", "b"])
    assert rec[0]["D70_gy"] == 1.0 and rec[0]["volume_ml"] == 4.0 and rec[0]["V100_pct"] == 0.0
    assert rec[1]["voxels"] == 0 and rec[1]["mean_gy"] is None and rec[1]["D50_gy"] is None

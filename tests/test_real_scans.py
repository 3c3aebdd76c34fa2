"""The shipped liver model on the vendored real scans (datasets/real): the floors a model must hold to ship.

Real anatomy decides which liver model ships (the liver model card's rule); these floors are the ones it was
chosen to pass. A model that falls below any of them on a real scan is a regression, whatever the phantom says.
"""

from __future__ import annotations

import pytest

from sirtjax.models import load_model
from sirtjax.segmentation.postprocess import LARGE_COMPONENT_ML
from sirtjax.segmentation.validation import evaluate_scan, real_scans

FLOORS = {"ts_ct_30": 0.90, "ts_mr_20": 0.85, "ts_ct_dicom_20": 0.90}  # liver DSC against the scan's reference
WHOLE_CT = "ts_ct_112"  # the 112-slice CT whose top 30 slices are ts_ct_30
WHOLE_CT_ML = (1043.0, 4500.0)  # at least the reference liver of its 30-slice cut, and under 4.5 L
WHOLE_CT_DSC = 0.85  # against TotalSegmentator's fast model (the shipped model: 0.897)
STRAY_SHARE = 0.5  # a stray component (gluteal muscle that the model reads as liver: 386 ml) under half the kept liver


@pytest.fixture(scope="module")
def shipped():
    return load_model("liver")


@pytest.mark.parametrize("scan", sorted(FLOORS))
def test_the_shipped_liver_model_holds_its_floor_on_a_real_scan(shipped, scan):
    result = evaluate_scan(*shipped, real_scans()[scan])
    assert result.dsc >= FLOORS[scan], result
    assert result.stray_ml < LARGE_COMPONENT_ML, result


def test_on_the_whole_real_ct_the_liver_is_the_largest_component_and_plausible(shipped):
    """The liver `segment` keeps (the largest component) is the liver, of a plausible volume, and what else the model
    reads as liver is too small to be kept in its place."""
    result = evaluate_scan(*shipped, real_scans()[WHOLE_CT])
    assert result.dsc >= WHOLE_CT_DSC, result
    assert WHOLE_CT_ML[0] <= result.volume_ml < WHOLE_CT_ML[1], result
    assert result.stray_ml < STRAY_SHARE * result.volume_ml, result

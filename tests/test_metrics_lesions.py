"""Lesion-wise detection with the counting rules of thesis 7.3.3, on hand-built cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from sirtjax.metrics import lesion_detection, lesion_instances
from sirtjax.volume import make_volume

SPACING = (0.7, 0.9, 3.0)
SHAPE = (10, 30, 40)


def box(lo, hi):
    m = np.zeros(SHAPE, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def instance_map(*masks):
    out = np.zeros(SHAPE, np.uint16)
    for i, m in enumerate(masks, start=1):
        out[m] = i
    return out


def test_counting_rules_of_thesis_7_3_3():
    r1, r2, r3, r4 = box((1, 1, 1), (4, 5, 5)), box((1, 1, 8), (4, 5, 12)), box((5, 20, 20), (8, 25, 26)), box((5, 2, 30), (8, 6, 36))
    ref = instance_map(r1, r2, r3, r4)
    p_bridge = box((2, 2, 3), (3, 3, 10))  # overlaps r1 and r2: both are TP
    p_split_a, p_split_b = box((5, 20, 20), (6, 22, 22)), box((7, 23, 24), (8, 25, 26))  # both on r3: one TP
    p_false = box((1, 20, 1), (3, 24, 4))  # overlaps nothing: one FP
    pred = instance_map(p_bridge, p_split_a, p_split_b, p_false)  # r4 is missed: one FN
    res = lesion_detection(pred, ref, spacing_mm=SPACING)
    assert (res.n_ref, res.n_pred, res.tp, res.fn, res.fp) == (4, 4, 3, 1, 1)
    assert res.sensitivity == pytest.approx(3 / 4) and res.precision == pytest.approx(3 / 4)
    assert res.ref_detected == (True, True, True, False)
    voxel_ml = np.prod(SPACING) / 1000
    assert res.ref_volumes_ml == pytest.approx([m.sum() * voxel_ml for m in (r1, r2, r3, r4)])
    json.dumps(res.to_json(), allow_nan=False)


def test_binary_masks_are_split_into_26_connected_components():
    a, b = box((1, 1, 1), (3, 3, 3)), box((3, 3, 3), (5, 5, 5))  # touch at one corner only
    c = box((6, 10, 10), (8, 14, 14))
    ref = (a | b | c).astype(np.uint8)
    assert lesion_instances(ref).max() == 2  # a and b are one 26-connected lesion
    assert ndimage.label(ref)[1] == 3  # (6-connectivity would make them two)
    pred = box((4, 4, 4), (5, 5, 5)).astype(np.uint8)
    res = lesion_detection(pred, ref, spacing_mm=SPACING)
    assert (res.tp, res.fn, res.fp) == (1, 1, 0)
    # Forcing instances on a binary map treats all of it as one lesion.
    forced = lesion_detection(pred, ref, spacing_mm=SPACING, components=False)
    assert (forced.n_ref, forced.tp, forced.fn) == (1, 1, 0)


def test_empty_maps_give_none_rates_and_counts():
    empty = np.zeros(SHAPE, np.uint8)
    ref = instance_map(box((1, 1, 1), (3, 3, 3)))
    none = lesion_detection(empty, empty, spacing_mm=SPACING)
    assert (none.n_ref, none.n_pred, none.sensitivity, none.precision) == (0, 0, None, None)
    missed = lesion_detection(empty, ref, spacing_mm=SPACING)
    assert (missed.fn, missed.sensitivity, missed.precision) == (1, 0.0, None)
    spurious = lesion_detection(ref, empty, spacing_mm=SPACING)
    assert (spurious.fp, spurious.sensitivity, spurious.precision) == (1, None, 0.0)
    for r in (none, missed, spurious):
        json.loads(json.dumps(r.to_json(), allow_nan=False))


def test_volumes_on_a_rotated_grid_and_grid_mismatch():
    ref = instance_map(box((1, 1, 1), (3, 3, 3)), box((5, 5, 5), (7, 7, 7)))
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    vr = make_volume(ref, SPACING, (4.0, 5.0, 6.0), direction)
    vp = vr.with_array((ref == 2).astype(np.uint8))
    res = lesion_detection(vp, vr)
    assert (res.tp, res.fn, res.fp) == (1, 1, 0)
    with pytest.raises(ValueError, match="differs"):
        lesion_detection(make_volume(ref, (1.0, 1.0, 1.0)), vr)

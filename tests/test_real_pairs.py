"""Registration pairs with a known answer made from the vendored real CT (sirtjax.phantom.real_pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from sirtjax.io import read_volume
from sirtjax.metrics import dice
from sirtjax.phantom.real_pairs import real_pair
from sirtjax.registration.warp import warp_volume
from sirtjax.segmentation.validation import real_scans


@pytest.fixture(scope="module")
def scan():
    s = real_scans()["ts_ct_112"]
    return read_volume(s.image), read_volume(s.labels)


@pytest.mark.parametrize("kind", ["ct", "mr"])
def test_the_true_field_carries_the_moving_labels_onto_the_fixed_ones(scan, kind):
    """Warped through the known displacement, the moving label map lies on the fixed one wherever the moving field of
    view reaches (up to 5 mm slices and nearest-neighbour labels), and the moving image is another grid and contrast."""
    pair = real_pair(*scan, seed=3, kind=kind)
    fixed = np.asarray(pair.fixed_labels.array)
    warped = np.asarray(warp_volume(pair.moving_labels, pair.true_displacement, order=0).array)
    seen = np.asarray(warp_volume(pair.moving_labels.with_array(np.ones(pair.moving.shape, np.uint8)), pair.true_displacement, order=0).array) > 0
    assert dice((warped == 1) & seen, (fixed == 1) & seen) > 0.95
    landmarks = [i for i in range(2, int(fixed.max()) + 1) if np.count_nonzero((fixed == i) & seen) > 50]
    assert len(landmarks) >= 8 and np.median([dice((warped == i) & seen, (fixed == i) & seen) for i in landmarks]) > 0.9
    assert tuple(pair.moving.spacing_mm) == (1.5, 1.5, 5.0) and not seen.all()  # the moving field of view is cut
    assert np.abs(np.asarray(pair.true_displacement.array)).max() > 5.0
    moving = np.asarray(pair.moving.array)
    assert (moving.min() >= 0.0) if kind == "mr" else (moving.min() < -900.0)


def test_pairs_are_deterministic_per_seed_and_differ_between_seeds(scan):
    a, b, c = (real_pair(*scan, seed=s, kind="mr") for s in (1, 1, 2))
    np.testing.assert_array_equal(np.asarray(a.moving.array), np.asarray(b.moving.array))
    assert not np.allclose(np.asarray(a.true_displacement.array), np.asarray(c.true_displacement.array))

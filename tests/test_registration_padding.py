"""Level boxes padded to a bucket shape compute exactly what the unpadded box computes.

New patients' grids hit compiled steps only if every level's arrays have one of a few shapes, so a box smaller
than its bucket is padded (:mod:`sirtjax.registration.padding`). These tests pad a level with garbage in the
field's padding and check that the objective, its gradient and the upsampled fields do not see it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sirtjax.registration import make_pair
from sirtjax.registration.nonrigid import RegulariserOptions, Weights, field_shape, field_volume, nonrigid_objective
from sirtjax.registration.padding import extend, valid_flat_index, valid_mask
from sirtjax.registration.problem import crop_level, make_level, stack_channels, stack_levels
from sirtjax.registration.regularisers import bending_energy, diffusion_energy
from sirtjax.registration.stages import _upsample_field
from sirtjax.registration.terms import SimilarityOptions, sample_voxels
from sirtjax.volume import make_volume
from registration_cases import affine_case_volumes, rotation


@pytest.fixture(scope="module")
def affine_case():
    """Fixed on an anisotropic grid; moving on an oblique grid, content mapped by a known affine."""
    return affine_case_volumes()


PAD = np.array([3, 5, 2])  # voxels added past each axis (z, y, x)


def _levels(affine_case, stiffness_inside=3.0):
    fixed, moving, fmask, mmask, *_ = affine_case
    pair = make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)
    level = make_level(*(stack_levels(stack_channels(img, seg), [4.0])[0] for img, seg in ((fixed, pair.fixed_seg), (moving, pair.moving_seg))),
                       roi_margin_mm=10.0, stiffness_inside=stiffness_inside)
    shape = np.asarray(level.roi_weight.shape)
    return level, crop_level(level, np.zeros(3, int), shape + PAD)


def _field(shape, seed):
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    rng = np.random.default_rng(seed)
    wave = np.stack([4.0 * np.sin(i / 1.7 + k / 3), 3.0 * np.cos(j / 2.1), 5.0 * np.sin(k / 2.5 + i / 4)], -1)
    return (wave + rng.normal(0, 0.5, wave.shape)).astype(np.float32)


def test_crop_level_pads_past_the_grid_and_keeps_the_valid_extent(affine_case):
    level, padded = _levels(affine_case)
    shape = np.asarray(level.roi_weight.shape)
    assert padded.roi_weight.shape == tuple(shape + PAD)
    np.testing.assert_array_equal(padded.fixed_size_zyx, shape)
    assert float(padded.box_fraction) == 1.0  # all of the level's voxels are in the box
    np.testing.assert_array_equal(np.asarray(padded.fixed.origin_mm), np.asarray(level.fixed.origin_mm))
    assert int(padded.roi_count) == int(level.roi_count) and not np.asarray(padded.roi_weight)[shape[0]:].any()


@pytest.mark.parametrize("factor,order,kind", [(1, 1, "spring"), (2, 1, "spring"), (2, 3, "spring"), (2, 1, "diffusion")])
def test_padded_level_gives_the_unpadded_objective_and_gradient(affine_case, factor, order, kind):
    """The terms and the gradient on the valid nodes equal the unpadded ones whatever the padding nodes hold;
    the padding nodes get no gradient (so the optimiser leaves them alone)."""
    level, padded = _levels(affine_case)
    nodes = field_shape(level.roi_weight.shape, factor)
    v = _field(nodes, 0) * factor  # folds somewhere at every node spacing
    garbage = _field(field_shape(padded.roi_weight.shape, factor), 1) * 10.0
    vp = garbage.copy()
    vp[: nodes[0], : nodes[1], : nodes[2]] = v
    objective = nonrigid_objective(SimilarityOptions(samples=None), RegulariserOptions(kind, 26, 5.0), image=True, seg=True,
                                   field_factor=factor, field_order=order)
    weights = Weights(jnp.float32(1.0), jnp.float32(2.0), jnp.float32(0.5))
    grad = jax.jit(jax.value_and_grad(objective, has_aux=True))
    (loss, terms), g = grad(jnp.asarray(v), level, weights, jax.random.key(0))
    (loss_p, terms_p), g_p = grad(jnp.asarray(vp), padded, weights, jax.random.key(0))
    for name in terms:
        assert float(terms_p[name]) == pytest.approx(float(terms[name]), rel=2e-5, abs=1e-8), name
    assert float(terms["fold"]) > 0  # the test field folds somewhere, so the barrier's padding is checked too
    g_p = np.array(g_p)
    np.testing.assert_allclose(g_p[: nodes[0], : nodes[1], : nodes[2]], np.asarray(g), rtol=1e-4, atol=1e-6 * np.abs(g).max())
    g_p[: nodes[0], : nodes[1], : nodes[2]] = 0
    assert not g_p.any()


def test_bending_on_a_padded_grid_differs_only_at_the_valid_border():
    """Bending reads the extrapolated padding: inside the valid grid it equals the unpadded energy's terms."""
    u = _field((9, 10, 11), 2)
    padded = np.zeros((12, 16, 13, 3), np.float32)
    padded[:9, :10, :11] = u
    valid = jnp.asarray([9, 10, 11])
    spacing = jnp.asarray([2.0, 2.5, 3.0])
    diffusion = (diffusion_energy(jnp.asarray(u), spacing), diffusion_energy(jnp.asarray(padded), spacing, valid_zyx=valid))
    assert float(diffusion[1]) == pytest.approx(float(diffusion[0]), rel=1e-5)
    bending = (bending_energy(jnp.asarray(u), spacing), bending_energy(jnp.asarray(padded), spacing, valid_zyx=valid))
    assert float(bending[1]) == pytest.approx(float(bending[0]), rel=0.3)


def test_samples_of_a_padded_box_are_valid_voxels(affine_case):
    level, padded = _levels(affine_case)
    opts = SimilarityOptions(samples=500)
    idx, w = sample_voxels(padded, jax.random.key(3), opts, roi=False)
    z, y, x = np.unravel_index(np.asarray(idx), padded.roi_weight.shape)
    shape = level.roi_weight.shape
    assert (z < shape[0]).all() and (y < shape[1]).all() and (x < shape[2]).all()
    assert len(np.unique(np.asarray(idx))) > 450 and float(w.sum()) == 500
    every = valid_flat_index(jnp.arange(int(np.prod(shape))), jnp.asarray(shape), padded.roi_weight.shape)
    mask = np.asarray(valid_mask(padded.roi_weight.shape, jnp.asarray(shape))).reshape(-1)
    np.testing.assert_array_equal(np.sort(np.asarray(every)), np.flatnonzero(mask))  # a bijection onto the valid voxels
    _, dense_w = sample_voxels(padded, jax.random.key(3), SimilarityOptions(samples=None), roi=False)
    np.testing.assert_array_equal(np.asarray(dense_w), mask)


@pytest.mark.parametrize("order", [1, 3])
def test_upsampled_field_ignores_the_padding_and_clamps_past_the_valid_nodes(order):
    """A coarse field with garbage past its valid nodes upsamples onto a padded finer grid as the unpadded field
    does onto the unpadded grid, and the result's padding holds the clamped border values."""
    fine = make_volume(np.zeros((13, 15, 17), np.uint8), (2.0, 2.5, 3.0), (-10.0, 4.0, 7.0), rotation(10, -20))
    coarse_nodes = field_shape(fine.shape, 4)
    c = _field(coarse_nodes, 4)
    cp = _field(tuple(np.asarray(coarse_nodes) + 2), 5) * 10
    cp[: coarse_nodes[0], : coarse_nodes[1], : coarse_nodes[2]] = c
    fine_p = dataclasses.replace(fine, array=np.zeros(tuple(np.asarray(fine.shape) + PAD), np.uint8))
    batched = lambda vol: jax.tree.map(lambda x: jnp.asarray(x)[None], vol)  # noqa: E731
    ref = _upsample_field(batched(field_volume(c, fine, 4)), jnp.asarray([coarse_nodes]), batched(fine),
                          jnp.asarray([fine.shape]), 2, order)[0]
    out = _upsample_field(batched(field_volume(cp, fine, 4)), jnp.asarray([coarse_nodes]), batched(fine_p),
                          jnp.asarray([fine.shape]), 2, order)[0]
    n = field_shape(fine.shape, 2)
    np.testing.assert_allclose(np.asarray(out)[: n[0], : n[1], : n[2]], np.asarray(ref), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(extend(np.asarray(out), np.asarray(n), xp=np)))


def test_coarse_buckets_pad_short_fields_of_view_towards_256_mm():
    """A field of view cut to 61 slices of 3 mm shares the 128-slice bucket of the usual abdominal grids (round 22's
    one compile on a warm cache); an axis is at most doubled towards 256 mm, and long axes only round up."""
    from sirtjax.buckets import coarse_bucket

    assert coarse_bucket((61, 80, 122)).tolist() == [64, 128, 128]
    assert coarse_bucket((61, 80, 122), (3.0, 3.0, 3.0)).tolist() == [128, 128, 128]
    assert coarse_bucket((16, 20, 31), (12.0, 12.0, 12.0)).tolist() == [32, 32, 32]
    assert coarse_bucket((16, 18, 20), (3.5, 3.0, 3.5)).tolist() == [32, 64, 64]  # doubled at most, then rounded up
    assert coarse_bucket((58, 373, 427), (5.0, 0.9, 0.9)).tolist() == [64, 512, 512]  # 290 mm of slices: as before


@pytest.mark.parametrize("shape,factor", [((13, 17, 10), (2, 3, 1)), ((9, 31, 22), (4, 2, 3)), ((16, 12, 24), (2, 2, 2))])
def test_bucketed_pyramid_level_equals_the_unpadded_one(shape, factor):
    """Smoothing and shrinking through the bucket shape's program gives the unpadded result, the clamped
    partial last blocks included."""
    from sirtjax.registration.pyramid import smooth_and_shrink, smooth_and_shrink_bucketed

    array = np.random.default_rng(7).normal(size=shape + (2,)).astype(np.float32)
    sigma = tuple(0.5 * f if f > 1 else 0.0 for f in factor)
    ref = np.asarray(smooth_and_shrink(jnp.asarray(array), sigma, factor))
    np.testing.assert_allclose(smooth_and_shrink_bucketed(array, sigma, factor), ref, rtol=1e-5, atol=1e-6)
    # padded further, towards 256 mm of 12 mm voxels
    np.testing.assert_allclose(smooth_and_shrink_bucketed(array, sigma, factor, None, (12.0, 12.0, 12.0)), ref, rtol=1e-5, atol=1e-6)
    # no padding budget: the closer fine bucket's program, the same result to the bit
    np.testing.assert_array_equal(smooth_and_shrink_bucketed(array, sigma, factor, None, None, pad_budget_voxels=0),
                                  smooth_and_shrink_bucketed(array, sigma, factor))


def test_fine_buckets_add_at_most_an_eighth_per_axis():
    """Scanner-size grids are padded to the fine bucket: the pyramid of a 513 x 513 x 288 CT at 12 mm has output
    shape (32, 35, 35), whose coarse bucket (64 in-plane) would pad it to 960 x 960 voxels."""
    from sirtjax.buckets import coarse_bucket, fine_bucket, grid_bucket
    from sirtjax.volume import make_grid

    n = np.arange(1, 5000)
    fine = fine_bucket(n)
    assert np.all(fine >= np.maximum(n, 8)) and np.all(fine <= np.maximum(n, 8) * 1.125)
    assert len(set(fine_bucket(np.arange(257, 513)).tolist())) == 8  # 288, 320, ..., 512
    assert fine_bucket((32, 35, 35)).tolist() == [32, 36, 36] and coarse_bucket((32, 35, 35)).tolist() == [32, 64, 64]
    # the full-resolution finish pads the moving CT to its grid bucket: 1.26x its voxels, not the coarse 7x
    ct = make_grid((288, 513, 513), (0.78, 0.78, 1.25), (0.0, 0.0, 0.0), np.eye(3))
    assert grid_bucket(ct).tolist() == [288, 576, 576]
    assert grid_bucket(make_grid((100, 510, 510), (0.98, 0.98, 3.0), (0.0, 0.0, 0.0), np.eye(3))).tolist() == [128, 512, 512]  # 7.5 M more
    assert grid_bucket(make_grid((80, 112, 128), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))).tolist() == [128, 128, 128]


def test_one_compiled_pyramid_serves_scans_whose_spacings_differ(tmp_path):
    """Two CTs with in-plane spacings 0.74 and 0.80 mm (sigmas 2.03 and 1.88 voxels at 3 mm, one kernel-radius bucket)
    and one read back with float32 rounding in its spacing: one program for all three, and each result is that
    of its own sigmas' smoothing (scipy's sampled Gaussian then linear sampling, as the unbucketed program)."""
    from sirtjax.programs import ProgramCache
    from sirtjax.registration.pyramid import radius_bucket, smooth_and_shrink, smooth_and_shrink_bucketed

    cache = ProgramCache(tmp_path)
    array = np.random.default_rng(3).normal(size=(17, 40, 37)).astype(np.float32)
    for spacing_mm in (0.74, 0.80, float(np.float32(0.80)) * (1 + 3e-8)):
        sigma = (0.0, 1.5 / spacing_mm, 1.5 / spacing_mm)
        ref = np.asarray(smooth_and_shrink(jnp.asarray(array), sigma, (1, 3, 3)))
        np.testing.assert_allclose(smooth_and_shrink_bucketed(array, sigma, (1, 3, 3), cache), ref, rtol=1e-5, atol=1e-6)
    assert len(cache._loaded) == 1
    assert [radius_bucket(r) for r in (0, 1, 2, 3, 4, 5, 6, 7, 9, 13, 25)] == [0, 1, 2, 3, 4, 6, 6, 8, 12, 16, 32]

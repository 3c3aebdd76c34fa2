"""register(): affine recovery in physical space, guided non-rigid, batching, no recompilation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage as ndi

from sirtjax import metrics
from sirtjax.interpolate import sample_world
from sirtjax.registration.affine import affine_step
from sirtjax.registration.nonrigid import (
    RegulariserOptions, Weights, field_at, field_shape, field_volume, nonrigid_objective, nonrigid_step,
)
from sirtjax.registration.optimise import Convergence, make_step, run_level, window_converged
from sirtjax.registration.optimisers import OPTIMISERS, LevelOptimiser, adam_cosine, transformation
from sirtjax.registration.problem import intensity_range, make_level, pad_moving, roi_mask, stack_channels, stack_levels
from sirtjax.registration.terms import MAX_SAMPLES, SimilarityOptions, similarity_terms
from sirtjax.registration.terms import stratified_picks
from sirtjax.buckets import bucket
from sirtjax.pipelines.inputs import QUICK_REGISTRATION
from sirtjax.registration import PRESETS, NonrigidStage, RegistrationConfig, make_pair, register
from sirtjax.registration.config import AffineStage, EarlyStop, Pyramid, Regulariser
from sirtjax.registration.levels import prepare_levels
from sirtjax.registration.stages import run_nonrigid
from sirtjax.registration.warp import affine_apply, resample_field, warp_volume
from registration_cases import affine_case_volumes, anatomy as _anatomy, rotation as _rot
from sirtjax.volume import make_volume, world_grid

# 6 springs per voxel compile in half the time of 26 (which the loss tests cover); accuracy is checked the same
FAST = RegistrationConfig(pyramid=Pyramid(levels=2, finest_mm=None), regulariser=Regulariser(neighbourhood=6),
                          affine=AffineStage(iterations=40, candidates=1), stages=(NonrigidStage(iterations=25),))
FAST_STAGE = FAST.stages[0]


def fast(affine: dict = {}, stage: dict | None = {}) -> RegistrationConfig:
    """FAST with some of its affine's and its stage's settings changed (stage None: the affine alone)."""
    stages = () if stage is None else (dataclasses.replace(FAST_STAGE, **stage),)
    return dataclasses.replace(FAST, affine=dataclasses.replace(FAST.affine, **affine), stages=stages)


@pytest.fixture(scope="module")
def affine_case():
    """Fixed on an anisotropic grid; moving on an oblique grid, content mapped by a known affine."""
    return affine_case_volumes()


def _affine_error_mm(aff, fixed, a_true, t_true, mask):
    p = np.asarray(world_grid(fixed))[np.asarray(mask.array) > 0]
    est = np.asarray(affine_apply(aff, jnp.asarray(p, jnp.float32)))
    return float(np.sqrt(np.mean(np.sum((est - (p @ a_true.T + t_true)) ** 2, -1))))


def test_mi_affine_recovers_a_known_transform_across_grids(affine_case):
    fixed, moving, fmask, _, a_true, t_true = affine_case
    res = register(fixed, moving, config=fast({"candidates": 2}, None))
    identity = jax.tree.map(jnp.asarray, res.affine)
    identity = dataclasses.replace(identity, matrix=jnp.eye(3), translation_mm=jnp.zeros(3))
    # within a voxel (3-4 mm) over the liver region after MI on inverted contrast, from ~10 mm
    err = _affine_error_mm(res.affine, fixed, a_true, t_true, fmask)
    assert err < 3.0 and err < 0.3 * _affine_error_mm(identity, fixed, a_true, t_true, fmask)
    # the field written for the affine equals the affine itself
    p = np.asarray(world_grid(fixed))
    np.testing.assert_allclose(p + np.asarray(res.displacement.array),
                               np.asarray(affine_apply(res.affine, jnp.asarray(p))), atol=1e-3)


# 8 mm: a dense field on the 8 mm level, every 2nd voxel on the 4 mm level; image_field_mm: an images-only stage
# first (as the cnn-guided preset's: a B-spline, nodes that far apart)
@pytest.mark.parametrize("field_spacing_mm,image_field_mm", [(0.0, 0.0), (8.0, 0.0), (8.0, 16.0)])
def test_mask_guided_registration_aligns_the_liver(affine_case, field_spacing_mm, image_field_mm):
    fixed, moving, fmask, mmask, a_true, t_true = affine_case
    config = fast({"on": "segmentation"}, {"field_spacing_mm": field_spacing_mm})
    if image_field_mm:
        image_stage = NonrigidStage(images_only=True, iterations=20, early_stop=False, samples=4096,
                                    field_spacing_mm=image_field_mm, field_order=3, fold_weight=100.0)
        config = dataclasses.replace(config, stages=(image_stage, *config.stages))
    res = register(fixed, moving, fixed_mask=fmask, moving_mask=mmask, config=config)
    warped_mask = warp_volume(mmask, res.displacement, order=0)
    before = metrics.dice(np.asarray(sample_world(mmask, world_grid(fixed), order=0)) > 0, fmask.array > 0)
    after = metrics.dice(warped_mask.array > 0, fmask.array > 0)
    assert before < 0.8 and after > 0.9  # 3-4 mm voxels, 12-16 mm radii
    jac = metrics.jacobian_stats(res.displacement, fmask.array > 0)
    assert float(jac.fraction_nonpositive) == 0.0
    names = [s["stage"] for s in res.diagnostics["stages"]]
    assert names == ["affine", "affine"] + ["image", "image"] * (image_field_mm > 0) + ["nonrigid", "nonrigid"]


@pytest.mark.parametrize("margin_mm", [0.0, 7.5, 30.0])
def test_roi_mask_is_the_segmentation_grown_by_the_margin_in_mm(margin_mm):
    """scipy's distance map of the whole grid, anisotropic spacing, a segmentation touching a border and a speck."""
    seg = np.zeros((20, 30, 40), bool)
    seg[3:9, 0:6, 10:25] = True
    seg[15, 20, 33] = True
    channels = np.stack([np.zeros(seg.shape), seg.astype(np.float64)], -1)
    spacing_xyz = np.array([1.5, 2.0, 4.0])
    expected = ndi.distance_transform_edt(~seg, sampling=spacing_xyz[::-1]) <= margin_mm
    np.testing.assert_array_equal(roi_mask(channels, spacing_xyz, margin_mm), expected)
    assert roi_mask(np.zeros(seg.shape + (2,)), spacing_xyz, margin_mm).all()  # empty: the whole grid


def _ct_slab(rng):
    """HU-like (z, y, x) slab: air, a body of soft tissue with a bone, noise, -3024 outside the reconstruction circle
    (a quarter of the voxels) and a metal clip at 3071."""
    y, x = np.mgrid[:64, :64] - 31.5
    r = np.hypot(y, x)
    hu = np.where(r < 26, 40.0, -1000.0) + np.where(np.hypot(y - 8, x) < 4, 900.0, 0.0)
    ct = np.repeat(hu[None], 12, axis=0) + rng.normal(0, 15, (12, 64, 64))
    ct[:, r > 31] = -3024.0
    ct[5:7, 30:32, 20:22] = 3071.0
    return ct.astype(np.float32)


def test_mi_bins_span_the_tissues_not_padding_or_metal():
    """The MI range is numpy's 0.5/99.5 % percentiles of the voxels at or above -1024 (CT padding below air left
    out): air to bone, not -3024 to the metal's 3071."""
    ct = _ct_slab(np.random.default_rng(0))
    lo, hi = intensity_range(ct)
    np.testing.assert_allclose([lo, hi], np.percentile(ct[ct >= -1024], [0.5, 99.5]), rtol=1e-5)
    assert -1060 < lo < -1000 and 900 < hi < 1000
    level = make_level(make_volume(ct[..., None]), make_volume(ct[..., None]))
    np.testing.assert_allclose(level.fixed_range, [lo, hi])


def test_mi_range_of_a_small_bright_object_is_its_min_and_max():
    """When the percentiles coincide (a 0/1 image whose 1s are under 0.5 % of it), the range is the min and max."""
    img = np.zeros((20, 30, 40), np.float32)
    img[3, 4, 5:10] = 1.0
    np.testing.assert_array_equal(intensity_range(img), [0.0, 1.0])
    big = np.random.default_rng(1).normal(size=(80, 80, 80)).astype(np.float32)  # a subsample above max_samples
    np.testing.assert_allclose(intensity_range(big), np.percentile(big, [0.5, 99.5]), atol=0.05)


@pytest.mark.parametrize("n, k", [(37, 5), (1000, 64), (7, 7), (5, 16)])
def test_stratified_picks_draw_every_index_equally_often_one_per_stratum(n, k):
    """Every index is drawn with probability k / n (scipy's chi-square test over 4000 draws does not reject
    uniformity), each draw is sorted, in range, and has exactly one pick in each stratum [i n / k, (i + 1) n / k)."""
    scipy_stats = pytest.importorskip("scipy.stats")
    draws = np.asarray(jax.vmap(lambda key: stratified_picks(key, k, jnp.int32(n)))(jax.random.split(jax.random.key(0), 4000)))
    assert draws.min() >= 0 and draws.max() < n and np.all(np.diff(draws, axis=1) >= 0)
    strata = np.floor(np.arange(k + 1) * n / k).astype(int)  # pick i lies in [floor(i n / k), ceil((i + 1) n / k))
    assert np.all(draws >= strata[:-1]) and np.all(draws < -(-(np.arange(1, k + 1) * n) // k))
    counts = np.bincount(draws.ravel(), minlength=n)
    assert scipy_stats.chisquare(counts).pvalue > 0.01
    assert np.all(np.asarray(stratified_picks(jax.random.key(1), k, jnp.int32(2**31 - 1))) >= 0)  # no int32 overflow


def test_samples_beyond_the_supported_range_are_rejected():
    """samples must be None (every voxel) or 1 .. MAX_SAMPLES: 0 or more would draw nothing or overflow the sampler."""
    for bad in (0, -5, MAX_SAMPLES + 1):
        with pytest.raises(ValueError, match="samples must be"):
            SimilarityOptions(samples=bad)
    assert SimilarityOptions(samples=MAX_SAMPLES).samples == MAX_SAMPLES


def test_the_cnn_guided_image_stage_is_an_explicit_stage():
    """cnn-guided: an images-only B-spline stage with its own springs and a fixed length, then the mask stage."""
    image, guided = PRESETS["cnn-guided"].stages
    assert image.images_only and image.field_order == 3 and image.image_term and not image.early_stop
    assert float(image.weights().reg) == 5.0 and float(guided.weights().reg) == 100.0
    assert not guided.images_only and not guided.image_term and PRESETS["cnn-guided"].main_stage is guided
    assert image.convergence(EarlyStop()).min_iterations == image.iterations


@pytest.mark.parametrize("order", [1, 3])
def test_coarse_field_interpolates_between_nodes_on_every_kth_voxel(order):
    """The field seen by the similarity terms (field_at) is scipy's trilinear interpolation (order 1) or cubic
    B-spline without prefilter (3: the nodes hold coefficients) between nodes on every 2nd voxel, and the field
    Volume written out (field_volume, resampled in world mm) is the same field."""
    rng = np.random.default_rng(3)
    level_shape = (9, 10, 13)
    assert field_shape(level_shape, 2) == (5, 5, 7)
    v = rng.normal(size=(5, 5, 7, 3)).astype(np.float32)
    flat = np.arange(int(np.prod(level_shape)))
    ours = np.asarray(field_at(jnp.asarray(v), jnp.asarray(flat), level_shape, 2, order))
    k, j, i = np.unravel_index(flat, level_shape)
    ref = np.stack([ndi.map_coordinates(v[..., c], [k / 2, j / 2, i / 2], order=order, prefilter=False, mode="nearest")
                    for c in range(3)], -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # voxels past the last node (x = 12 is node 6) clamp to it
    level = make_volume(np.zeros(level_shape, np.float32), (3.5, 3.0, 4.0), (-38.0, -30.0, -36.0), _rot(10, 20))
    written = np.asarray(resample_field(field_volume(jnp.asarray(v), level, 2), level, order))
    np.testing.assert_allclose(written.reshape(-1, 3), ours, atol=1e-4)


def test_a_spline_field_cannot_rest_on_an_earlier_field(affine_case):
    fixed, moving, fmask, mmask, *_ = affine_case
    levels = prepare_levels([make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)], FAST)
    weights = jax.tree.map(lambda w: w[None], FAST_STAGE.weights())
    base = field_volume(jnp.zeros((1, 2, 2, 2, 3)), levels[-1].fixed, 4)
    with pytest.raises(ValueError, match="field_order 3"):
        run_nonrigid(levels, weights, dataclasses.replace(FAST_STAGE, field_order=3), FAST, jax.random.key(0), base=base)
    with pytest.raises(ValueError, match="field_order must be 1 or 3"):
        dataclasses.replace(FAST_STAGE, field_order=2)
    with pytest.raises(ValueError, match="first non-rigid stage"):
        dataclasses.replace(FAST, stages=(FAST_STAGE, dataclasses.replace(FAST_STAGE, field_order=3)))


def test_field_spacing_puts_the_finest_field_on_every_second_voxel(affine_case):
    """field_spacing_mm 8 on 8 and 4 mm levels: the non-rigid stage returns its field on nodes 8 mm apart."""
    fixed, moving, fmask, mmask, *_ = affine_case
    config = fast({"on": "segmentation"}, {"field_spacing_mm": 8.0})
    levels = prepare_levels([make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)], config)
    weights = jax.tree.map(lambda w: w[None], config.main_stage.weights())
    residual, _ = run_nonrigid(levels, weights, config.main_stage, config, jax.random.key(0))
    finest = levels[-1].fixed
    np.testing.assert_allclose(np.asarray(residual.spacing_mm), 2 * np.asarray(finest.spacing_mm))
    assert residual.array.shape[1:4] == field_shape(finest.array.shape[1:4], 2)
    assert float(jnp.max(jnp.abs(residual.array))) > 0.1  # the masks moved it (mm)


def test_nonrigid_objective_adds_the_base_field_and_rests_its_springs_on_it(affine_case):
    """A field from an earlier stage (LevelData.base_field) moves the similarity terms and the folding barrier
    exactly as if the optimised field held it, while the springs see only the optimised part."""
    fixed, moving, fmask, mmask, *_ = affine_case
    pair = make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)
    level = make_level(*(stack_levels(stack_channels(img, seg), [4.0])[0] for img, seg in ((fixed, pair.fixed_seg), (moving, pair.moving_seg))),
                       roi_margin_mm=10.0)
    shape = field_shape(level.fixed.array.shape[:3], 2)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    base = jnp.asarray(np.stack([12.0 * np.sin(i / 1.5 + k / 5), 2.0 * np.cos(j / 4), 3.0 * np.sin(k / 3)], -1), jnp.float32)  # x, y, z mm
    objective = nonrigid_objective(SimilarityOptions(samples=None), RegulariserOptions("spring", 26, 5.0), image=True, seg=True, field_factor=2)
    weights = Weights(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(1.0))
    _, on_base = objective(jnp.zeros_like(base), dataclasses.replace(level, base_field=base), weights, jax.random.key(0))
    _, held = objective(base, level, weights, jax.random.key(0))
    for name in ("image", "seg", "fold"):
        assert float(on_base[name]) == pytest.approx(float(held[name]), rel=1e-6, abs=1e-9), name
    assert float(held["fold"]) > 0 and float(held["reg"]) > 1e-3  # the base strains the springs of a field that holds it
    assert float(on_base["reg"]) == pytest.approx(5.0 * float(held["fold"]), rel=1e-6)  # springs at rest: only the barrier


def test_padded_moving_grid_gives_the_same_similarity_terms(affine_case):
    """Moving level grids padded to a bucket size (repeated border) sample exactly like the unpadded grid."""
    fixed, moving, fmask, mmask, *_ = affine_case
    pair = make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)
    level = make_level(*(stack_levels(stack_channels(img, seg), [4.0])[0] for img, seg in ((fixed, pair.fixed_seg), (moving, pair.moving_seg))),
                       roi_margin_mm=10.0)
    padded = pad_moving(level, bucket(np.asarray(level.moving.array.shape[:3]) + 1))
    assert padded.moving.array.shape != level.moving.array.shape
    # a shift that maps part of the fixed grid outside the moving grid (those samples must not count)
    to_moving = lambda idx, p: p + jnp.asarray([9.0, -7.0, 11.0])  # noqa: E731
    opts = SimilarityOptions(samples=None)
    terms = jax.jit(lambda lv: similarity_terms(lv, jax.random.key(0), to_moving, opts, image=True, seg=True))
    a, b = terms(level), terms(padded)
    for name in ("image", "seg"):
        assert float(a[name]) == pytest.approx(float(b[name]), rel=1e-6, abs=1e-7), name  # float32 reductions


def test_label_maps_with_different_landmark_counts_batch_and_pad_with_empty_classes(affine_case):
    """Label maps are padded to 4 channels (empty classes leave the overlap term unchanged), so pairs
    with 2 and 3 classes stack into one batch and share one compiled step."""
    fixed, moving, fmask, mmask, *_ = affine_case
    fa, ma, fl, ml = (np.asarray(v.array) for v in (fixed, moving, fmask, mmask))
    f2 = np.where((fa > 100) & (fa < 140) & (fl == 0), 2, fl)  # the spot: 120 in the fixed image, 130 in the moving
    m2 = np.where((ma > 120) & (ma < 140) & (ml == 0), 2, ml)
    half = lambda lab: np.where((lab == 1) & (np.arange(lab.shape[0]) < lab.shape[0] // 2)[:, None, None], 3, lab)  # noqa: E731
    pairs = [make_pair(fixed, moving, fixed_labels=fixed.with_array(f2.astype(np.uint8)), moving_labels=moving.with_array(m2.astype(np.uint8))),
             make_pair(fixed, moving, fixed_labels=fixed.with_array(half(f2).astype(np.uint8)),
                       moving_labels=moving.with_array(half(m2).astype(np.uint8)))]
    assert [p.n_seg for p in pairs] == [2, 3]
    levels = prepare_levels(pairs, FAST)
    assert levels[-1].fixed.array.shape[-1] == 1 + 4  # image + 4 label channels for both pairs
    opts = SimilarityOptions(samples=None)
    to_moving = lambda idx, p: p + jnp.asarray([2.0, -1.0, 3.0])  # noqa: E731
    one = make_level(*(stack_levels(stack_channels(img, seg), [4.0])[0] for img, seg in ((fixed, pairs[0].fixed_seg), (moving, pairs[0].moving_seg))),
                     roi_margin_mm=FAST.similarity.roi_margin_mm)  # unpadded, uncropped: the same ROI voxels
    padded = prepare_levels([pairs[0]], FAST)[-1]
    a = similarity_terms(one, jax.random.key(0), to_moving, opts, image=False, seg=True)["seg"]
    b = similarity_terms(jax.tree.map(lambda x: x[0], padded), jax.random.key(0), to_moving, opts, image=False, seg=True)["seg"]
    assert float(b) == pytest.approx(float(a), rel=1e-4)


def test_vmapped_step_matches_single_steps(affine_case):
    """A batch of two pairs with two weight settings steps exactly like two batches of one."""
    fixed, moving, fmask, mmask, *_ = affine_case
    pair = make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)
    level = prepare_levels([pair], FAST)[0]
    both = jax.tree.map(lambda x: jnp.concatenate([x, x]), level)
    # FAST's settings on FAST's first level: the batch-of-one program is the one the mask-guided test compiled
    step, tx = nonrigid_step(FAST.similarity.options(FAST_STAGE.samples), FAST.regulariser_options(FAST_STAGE), True, True,
                             1.0, 10)
    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.normal(0, 1, (2, *level.fixed.array.shape[1:4], 3)), jnp.float32)
    w = Weights(jnp.asarray([1.0, 0.0]), jnp.asarray([1.0, 2.0]), jnp.asarray([1.0, 5.0]))
    key = jax.random.key(0)  # the level is smaller than FAST's samples: every voxel counts, whatever the key

    def one_step(v, data, w, batch):  # a chunk of one step, no stopping rule
        return step(v, tx.init(v), data, w, key, jnp.ones(batch, bool), jnp.full((20, batch), jnp.nan),
                    jnp.int32(0), jnp.int32(1), jnp.int32(100), jnp.float32(0.0))

    out_b, _, terms_b = one_step(v, both, w, 2)
    for i in range(2):
        wi = jax.tree.map(lambda x: x[i : i + 1], w)
        out_1, _, terms_1 = one_step(v[i : i + 1], level, wi, 1)
        # same program; Adam's first step is g / |g|, so near-zero gradients amplify float32 summation order
        np.testing.assert_allclose(np.asarray(out_b[i]), np.asarray(out_1[0]), atol=1e-3)
        assert float(terms_b["loss"][i]) == pytest.approx(float(terms_1["loss"][0]), rel=1e-5)
    assert float(terms_b["loss"][0]) != pytest.approx(float(terms_b["loss"][1]), rel=1e-3)


def test_step_compiles_once_for_every_learning_rate_and_length(affine_case):
    fixed, moving, *_ = affine_case
    traces = []
    opts = SimilarityOptions()
    step, tx = affine_step(opts, "images", 1.0, 5)
    levels = prepare_levels([make_pair(fixed, moving)], FAST)
    params = {"translation_mm": jnp.zeros((1, 3)), "linear_mm": jnp.zeros((1, 3, 3))}
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: traces.append(name) if name == "/jax/core/compile/backend_compile_duration" else None)
    run_level(step, params, tx, levels[0], None, jax.random.key(0), Convergence(5, min_iterations=5))
    n_first = len(traces)
    step2, tx2 = affine_step(opts, "images", 2.5, 9)  # another level's step size and schedule length
    assert step2 is step
    run_level(step2, params, tx2, levels[0], None, jax.random.key(1), Convergence(5, min_iterations=5))
    assert n_first >= 1 and len(traces) == n_first  # the second call reuses the compiled step


def test_adam_cosine_equals_optax_adam_with_cosine_decay():
    """The schedule kept in the optimiser state steps exactly like optax's adam(cosine_decay_schedule)."""
    tx, ref = adam_cosine(0.5, 10), optax.adam(optax.cosine_decay_schedule(0.5, 10, alpha=0.1))
    p = jnp.ones(3)
    s1, s2 = tx.init(p), ref.init(p)
    update, update_ref = jax.jit(tx.update), jax.jit(ref.update)
    for i in range(14):  # past the end of the decay too
        g = jnp.asarray([1.0, -2.0, 0.3]) * (i + 1)
        (u1, s1), (u2, s2) = update(g, s1, p), update_ref(g, s2, p)
        np.testing.assert_allclose(np.asarray(u1), np.asarray(u2), rtol=1e-5, atol=1e-7)  # float32


def _quadratic(params, data, weights, key):
    """An ill-conditioned convex quadratic (condition number 100) whose minimum is data["target"]."""
    del weights, key
    r = (params - data["target"]) * jnp.asarray([10.0, 1.0, 0.1])
    loss = jnp.sum(r * r)
    return loss, {"fit": loss}


@pytest.mark.parametrize("kind", OPTIMISERS)
def test_every_optimiser_reaches_the_minimum_of_a_quadratic_through_make_step(kind):
    """make_step(objective, tx) with each optax transformation: the analytic minimum to 1e-3 (L-BFGS, with its line
    search through value_fn, in a few steps; Adam's last steps are 10 % of its step size)."""
    target = jnp.asarray([[1.5, -2.0, 0.7]])
    step = make_step(_quadratic, transformation(kind, 1.0, 1), f"quadratic {kind}")
    iterations = 300 if kind == "adam" else 30
    params, log = run_level(step, jnp.zeros((1, 3)), LevelOptimiser(kind, 0.05, iterations), {"target": target}, None,
                            jax.random.key(0), Convergence(iterations, min_iterations=iterations))
    np.testing.assert_allclose(np.asarray(params), np.asarray(target), atol=1e-3 if kind == "lbfgs" else 2e-2)


def test_an_unknown_optimiser_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown optimiser 'sgd'"):
        transformation("sgd", 1.0, 10)


def test_window_rule_stops_on_a_noisy_plateau_not_on_a_noisy_descent():
    rng = np.random.default_rng(0)
    its = np.arange(200)
    noise = rng.normal(0, 0.01, (200, 2))
    # member 0 flattens at 1.0 after ~30 steps; member 1 keeps descending 0.5 % per step; both noisy
    history = np.stack([1.0 + np.exp(-its / 10.0), 2.0 - 0.005 * its], -1) + noise
    padded = np.concatenate([np.full((20, 2), np.nan), history])  # the rule's tail starts as NaN

    def converged(n):  # after n steps: the last 2 windows of 10 losses, at least 20 steps
        return np.asarray(window_converged(jnp.asarray(padded[n:n + 20], jnp.float32), n, 20, 1e-3))

    stop = [next((n for n in range(1, 201) if converged(n)[m]), None) for m in range(2)]
    assert 30 <= stop[0] <= 80 and stop[1] is None
    flat = jnp.ones((20, 1), jnp.float32)  # a perfectly flat tail stops a member, but not before min_iterations
    assert [bool(window_converged(flat, n, 30, 1e-3)[0]) for n in (20, 29, 30)] == [False, False, True]


@pytest.mark.slow
def test_grid_search_scores_every_weight_pair(affine_case):
    from sirtjax.registration.grid_search import grid_search

    fixed, moving, fmask, mmask, *_ = affine_case
    pair = make_pair(fixed, moving, fixed_mask=fmask, moving_mask=mmask)
    # without the image term (as the cnn-guided preset): the search turns it on for its w_I > 0 members
    cfg = fast({"on": "segmentation", "iterations": 20}, {"iterations": 10, "image_term": False})
    out = grid_search([pair, pair], [fmask, fmask], [mmask, mmask], [0.0, 1.0], [0.0, 1.0, 4.0], cfg, max_batch=5)
    assert out["rrmsd_mm"].shape == (2, 3) and np.all(np.isfinite(out["rrmsd_mm"]))
    # the two identical cases give the same RMSD for every weight pair (batched in different chunks)
    np.testing.assert_allclose(out["rmsd_mm"][..., 0], out["rmsd_mm"][..., 1], atol=0.5)
    assert out["best"][1] > 0  # mask guidance helps the mask-scored error


def test_positive_image_weight_without_the_image_term_is_refused(affine_case):
    fixed, moving, fmask, mmask, *_ = affine_case
    cfg = fast({"on": "segmentation", "iterations": 5}, {"image_term": False})
    with pytest.raises(ValueError, match="image weight"):
        register(fixed, moving, fixed_mask=fmask, moving_mask=mmask, config=cfg,
                 weights=Weights(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(10.0)))


@pytest.mark.slow
@pytest.mark.parametrize("moving", ["diag_ct", "diag_mr"])  # seed-11 MR folded 0.115-0.148 % before the folding barrier
def test_cnn_lm_guided_phantom_accuracy(moving):
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(11, PhantomConfig.small())
    fl, ml = study.images["maa_ct_labels"], study.images[f"{moving}_labels"]
    res = register(study.images["maa_ct"], study.images[moving], fixed_labels=fl, moving_labels=ml,
                   config=PRESETS["cnn-lm-guided"])
    ev = evaluate(res.displacement, fl, ml)
    assert ev["dice_liver"] >= 0.93 and ev["rmsd_mm"] <= 3.0 and ev["folding_liver"] < 0.001


@pytest.mark.slow
@pytest.mark.parametrize("moving", ["diag_ct", "diag_mr"])
def test_cnn_guided_phantom_accuracy_and_no_folding(moving):
    """The cnn-guided preset (masks-only non-rigid stage) on a non-benchmark seed: accurate, and no
    folding anywhere (its MI term folded the field at the MAA CT's field-of-view edge, round 5)."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(12, PhantomConfig.small())
    fl, ml = study.images["maa_ct_labels"], study.images[f"{moving}_labels"]
    res = register(study.images["maa_ct"], study.images[moving], fixed_mask=study.images["maa_ct_liver"],
                   moving_mask=study.images[f"{moving}_liver"], config=PRESETS["cnn-guided"])
    ev = evaluate(res.displacement, fl, ml)
    # measured (round 25) Dice 0.954 / 0.947, RMSD 2.08 / 2.90 mm, folding 0 (CT / MR); the true field itself scores
    # Dice 0.949 / 0.941 on these 6 mm labels (nearest-neighbour warping), elastix 0.944 / 0.892 and 2.88 / 8.33 mm.
    # The round-5 preset's image term folded 0.20 / 0.48 % of all voxels.
    assert ev["dice_liver"] >= 0.93 and ev["rmsd_mm"] <= 3.5, ev
    assert float(metrics.jacobian_stats(res.displacement).fraction_nonpositive) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("moving, max_rmsd_mm", [("diag_ct", 1.9), ("diag_mr", 3.2)])
def test_image_based_coarse_image_stage_first(moving, max_rmsd_mm):
    """The image-based preset fits cnn-guided's coarse B-spline image stage before its dense MI stage (round 24).
    3 mm seed 106 (a tuning seed): RMSD 1.48 / 2.37 mm (CT / MR) with it, 2.14 / 4.23 mm with the dense stage alone."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(106, PhantomConfig())
    fl, ml = study.images["maa_ct_labels"], study.images[f"{moving}_labels"]
    res = register(study.images["maa_ct"], study.images[moving], config=PRESETS["image-based"])
    ev = evaluate(res.displacement, fl, ml)
    assert ev["rmsd_mm"] <= max_rmsd_mm and ev["folding_liver"] == 0.0, ev


@pytest.mark.slow
def test_image_based_mr_does_not_fold():
    """The image-based preset's folding barrier: its MI folded 0.35 % of all voxels of seed 12's MR pair without it."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(12, PhantomConfig.small())
    res = register(study.images["maa_ct"], study.images["diag_mr"], config=PRESETS["image-based"])
    ev = evaluate(res.displacement, study.images["maa_ct_labels"], study.images["diag_mr_labels"])
    assert ev["dice_liver"] >= 0.9 and ev["rmsd_mm"] <= 5.0, ev  # measured 0.914, 3.92 mm (3.93 without the barrier)
    assert float(metrics.jacobian_stats(res.displacement).fraction_nonpositive) < 1e-4


@pytest.mark.slow
def test_image_based_mr_keeps_the_liver_at_the_field_of_view_edge():
    """3 mm seed 5, MR -> MAA CT: a non-rigid level at 24 mm stretched the liver cut by the fixed field of view along z
    (a 19-voxel landmark 34 mm off, RMSD 15.6 mm); on the 12 and 6 mm levels alone it ends at 4.5 mm."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(5, PhantomConfig())
    res = register(study.images["maa_ct"], study.images["diag_mr"], config=PRESETS["image-based"])
    ev = evaluate(res.displacement, study.images["maa_ct_labels"], study.images["diag_mr_labels"])
    assert ev["rmsd_mm"] <= 6.0 and max(ev["mcd_mm"].values()) <= 10.0, ev


@pytest.mark.slow
def test_image_based_mr_affine_does_not_collapse_along_z():
    """3 mm seed 10, MR -> MAA CT, affine alone: without the strain barrier MI shrank the fixed grid to 0.19 of
    its length along one axis (liver Dice 0.73, RMSD 59 mm); with it the affine stays near a rotation."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(10, PhantomConfig())
    res = register(study.images["maa_ct"], study.images["diag_mr"],
                   config=dataclasses.replace(PRESETS["image-based"], stages=()))
    ev = evaluate(res.displacement, study.images["maa_ct_labels"], study.images["diag_mr_labels"])
    stretches = np.linalg.svd(np.asarray(res.affine.matrix), compute_uv=False)
    assert ev["dice_liver"] >= 0.93 and ev["rmsd_mm"] <= 4.0, ev  # measured 0.963, 2.2 mm
    assert stretches.min() > 0.85 and stretches.max() < 1.15, stretches


def test_affine_strain_barrier_keeps_the_matrix_near_a_rotation():
    """The moving image shows the anatomy stretched 1.5x along z: without a limit the affine recovers the stretch
    (principal stretch 1.5); with the default limit (|E|_F 0.15, a stretch of about 1.14) it stays near a rotation
    (measured |E|_F 0.08)."""
    fixed = make_volume(np.zeros((20, 18, 20), np.float32), (4.0, 4.0, 3.5), (-40.0, -36.0, -35.0))
    img, _ = _anatomy(np.asarray(world_grid(fixed)))
    fixed = fixed.with_array(img)
    a_true = _rot(0, 10) @ np.diag([1.0, 1.0, 1.5])
    moving = make_volume(np.zeros((30, 20, 20), np.float32), (4.0, 4.0, 4.0), (-40.0, -40.0, -60.0))
    mimg, _ = _anatomy(np.asarray(world_grid(moving)) @ np.linalg.inv(a_true).T)
    moving = moving.with_array(mimg)
    cfg = fast({"iterations": 80}, None)
    free = register(fixed, moving, config=fast({"iterations": 80, "max_strain": None}, None))
    held = register(fixed, moving, config=cfg)
    strain = lambda m: np.linalg.norm(0.5 * (m.T @ m - np.eye(3)))  # noqa: E731
    assert np.linalg.svd(np.asarray(free.affine.matrix), compute_uv=False).max() > 1.35  # the true 1.5, mostly
    assert strain(np.asarray(held.affine.matrix)) < 0.2 < strain(np.asarray(free.affine.matrix))


def test_cnn_lm_guided_quick_phantom_accuracy():
    """A real phantom pair in the default suite: MR -> MAA CT, label-map guided, 24/12 mm levels only, without the
    image stage (as the CLI's --quick)."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(11, PhantomConfig.small())
    fl, ml = study.images["maa_ct_labels"], study.images["diag_mr_labels"]
    cfg = dataclasses.replace(QUICK_REGISTRATION.apply(PRESETS["cnn-lm-guided"]), regulariser=Regulariser(neighbourhood=6))
    res = register(study.images["maa_ct"], study.images["diag_mr"], fixed_labels=fl, moving_labels=ml, config=cfg)
    ev = evaluate(res.displacement, fl, ml)
    before = evaluate(res.displacement.with_array(np.zeros(res.displacement.shape + (3,), np.float32)), fl, ml)
    assert before["rmsd_mm"] > 20 and before["dice_liver"] < 0.6  # the sessions start far apart
    # a 12 mm field cannot follow the liver surface as closely as the presets' 3 mm levels (>= 0.93 there), so the
    # bounds keep a voxel's margin
    assert ev["rmsd_mm"] <= 3.0 and ev["dice_liver"] >= 0.88 and ev["folding_liver"] < 0.001


def test_mi_affine_ranks_candidate_starts_at_the_finest_level():
    """Image-based MR -> MAA CT (seed 22): the coarsest level's MI ranked a start 32 mm off first, the
    finest level the right one (3.3 mm, liver Dice 0.93 after the affine alone); the stage keeps the latter."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.registration.grid_search import evaluate

    study = generate_study(22, PhantomConfig.small())
    res = register(study.images["maa_ct"], study.images["diag_mr"],
                   config=dataclasses.replace(PRESETS["image-based"], stages=()))
    ev = evaluate(res.displacement, study.images["maa_ct_labels"], study.images["diag_mr_labels"])
    assert ev["rmsd_mm"] < 6.0 and ev["dice_liver"] > 0.9


def test_final_window_mean_skips_the_steps_after_a_member_stopped():
    from sirtjax.registration.stages import _final_window_mean

    history = np.array([[5.0, 9.0], [4.0, 8.0], [3.0, np.nan], [1.0, np.nan]])
    np.testing.assert_allclose(_final_window_mean(history, 2), [2.0, 8.5])
    assert _final_window_mean(np.full((3, 1), np.nan), 2)[0] == np.inf

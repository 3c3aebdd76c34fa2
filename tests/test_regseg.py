"""The joint registration-segmentation network (paper 004): geometry in physical space, batching, training, resuming."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from sirtjax.metrics import dice
from sirtjax.models.regseg import RegSegNet
from sirtjax.models.store import build_model, param_arrays
from sirtjax.registration.warp import AffineTransform, affine_to_homogeneous
from sirtjax.segmentation.regseg import fixed_field, network_pair
from sirtjax.train.regseg import parse_regseg_config, train_regseg, validate
from sirtjax.train.regseg_data import TrainPair, pair_seeds
from sirtjax.volume import index_to_world, make_volume

SPEC = {"arch": "regseg", "features": [4, 8], "cascades": 3, "scale_mm": 10.0, "spacing_mm": [4.0, 4.0, 4.0], "grid_zyx": [32, 32, 32]}
TWO = {**SPEC, "cascades": 2}  # the training tests: two cascades train and compile faster than three
OBLIQUE = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])


def _ct(shape_zyx, spacing, origin, direction, shift_mm=(0.0, 0.0, 0.0), liver_hu=60.0):
    """A body (40 HU) in air with a liver ellipsoid (liver_hu) and a bright spine, moved by shift_mm; (CT, liver) Volumes."""
    vol = make_volume(np.zeros(shape_zyx, np.float32), spacing, origin, direction)
    k, j, i = np.indices(shape_zyx)
    pts = (np.stack([i, j, k, np.ones_like(i)], -1) @ index_to_world(vol).T)[..., :3] - np.asarray(shift_mm)
    r = lambda c, ax: np.sum(((pts - np.asarray(c)) / np.asarray(ax)) ** 2, -1)  # noqa: E731
    body, liver, spine = r((0, 0, 0), (90, 70, 200)) <= 1, r((-30, -5, 0), (45, 35, 40)) <= 1, r((0, 45, 0), (12, 12, 200)) <= 1
    ct = np.where(body, 40.0, -1000.0) + liver * (liver_hu - 40.0) + spine * 600.0
    return vol.with_array(ct.astype(np.float32)), vol.with_array(liver.astype(np.uint8))


@pytest.fixture(scope="module")
def untrained():
    model = build_model(SPEC, rngs=nnx.Rngs(params=0))
    return model, SPEC


def test_untrained_network_is_the_identity(untrained):
    model, _ = untrained
    rng = np.random.default_rng(0)
    f, m = (jnp.asarray(rng.uniform(-0.5, 0.5, (1, 8, 8, 8)).astype(np.float32)) for _ in range(2))
    out = model(f, m, m, (4.0, 4.0, 4.0))
    assert float(jnp.abs(out.displacement_mm).max()) == 0.0
    np.testing.assert_allclose(np.asarray(out.warped), np.asarray(m), atol=1e-6)


def test_fixed_field_is_affine_after_network_field_against_scipy():
    """D(p) = A(p + u(p)) - p on an oblique anisotropic fixed grid, with u interpolated by scipy and A as a 4x4 matrix."""
    fixed = make_volume(np.zeros((10, 12, 14), np.float32), (2.5, 3.0, 4.0), (-30.0, 20.0, 5.0), OBLIQUE)
    grid = make_volume(np.zeros((16, 16, 16), np.uint8), (4.0, 4.0, 4.0), (-60.0, -30.0, -35.0), np.eye(3))
    rng = np.random.default_rng(1)
    u = ndimage.gaussian_filter(rng.normal(0, 20, (16, 16, 16, 3)), (2, 2, 2, 0)).astype(np.float32)
    rot = np.array([[0.995, -0.0998, 0.0], [0.0998, 0.995, 0.0], [0.0, 0.0, 1.0]], np.float32)
    affine = AffineTransform(rot * 1.02, np.array([3.0, -4.0, 6.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32))
    d = np.asarray(fixed_field(u, grid, affine, fixed).array)
    k, j, i = np.indices(fixed.shape)
    p = (np.stack([i, j, k, np.ones_like(i)], -1) @ index_to_world(fixed).T)[..., :3]
    idx = (p - grid.origin_mm) / 4.0  # identity direction: (x, y, z) index of each fixed point on the network grid
    u_p = np.stack([ndimage.map_coordinates(u[..., c], [idx[..., 2].ravel(), idx[..., 1].ravel(), idx[..., 0].ravel()],
                                            order=1, mode="nearest").reshape(p.shape[:3]) for c in range(3)], -1)
    q = p + u_p
    expected = (np.concatenate([q, np.ones(q.shape[:3] + (1,))], -1) @ affine_to_homogeneous(affine).T)[..., :3] - p
    np.testing.assert_allclose(d, expected, atol=2e-3)


def test_untrained_network_carries_the_mask_across_grids_in_physical_space(untrained):
    """A patient moved by a known shift between a flipped anisotropic fixed grid and an oblique moving grid: the network
    box, its (zero) field and the field on the fixed grid put the reference mask on the fixed liver. (The affine
    pre-alignment, estimated, is exercised by the CLI test on a phantom in test_segmentation_default_model.)"""
    from sirtjax.registration.warp import warp_volume
    from sirtjax.segmentation.regseg import network_fields

    model, spec = untrained
    shift = np.array([8.0, -6.0, 10.0])
    fixed, truth = _ct((36, 40, 52), (4.0, 4.5, 5.0), (110.0, 95.0, -90.0), np.diag([-1.0, -1.0, 1.0]))
    moving, moving_liver = _ct((30, 36, 44), (5.0, 5.0, 6.0), (-100.0, -80.0, -100.0), OBLIQUE, shift_mm=shift, liver_hu=150.0)
    affine = AffineTransform(np.eye(3, dtype=np.float32), shift.astype(np.float32), np.zeros(3, np.float32))
    pair = network_pair(fixed, moving, moving_liver, affine, spec["spacing_mm"], spec["grid_zyx"])
    assert dice(pair.moving_mask >= 0.5, np.asarray(warp_volume(truth, pair.grid.with_array(np.zeros((*pair.grid.shape, 3), np.float32)),
                                                                 order=0).array) > 0) > 0.9  # the box holds the liver, aligned
    field = fixed_field(network_fields(model, spec["spacing_mm"], [pair])[0], pair.grid, affine, fixed)
    carried = np.asarray(warp_volume(moving_liver.with_array(np.asarray(moving_liver.array, np.float32)), field).array) >= 0.5
    assert dice(carried, np.asarray(truth.array) > 0) > 0.9


def test_a_batch_equals_its_pairs_one_by_one():
    """Pairs from grids of different sizes, on boxes of one shape in one network call, give each pair's own result."""
    model = RegSegNet((4, 8), 2, rngs=nnx.Rngs(params=3))
    for net in model.cascades:  # a non-zero field, so that padding and batching would show
        net.head.kernel.set_value(jax.random.normal(jax.random.key(5), net.head.kernel.get_value().shape) * 0.05)
    affine = AffineTransform(np.eye(3, dtype=np.float32), np.array([2.0, 0.0, -3.0], np.float32), np.zeros(3, np.float32))
    cases = [_ct((24, 28, 30), (5.0, 5.0, 5.0), (-70.0, -70.0, -60.0), np.eye(3)),
             _ct((20, 32, 36), (5.0, 5.0, 6.0), (-90.0, -80.0, -60.0), np.eye(3))]
    pairs = [network_pair(ct, ct, liver, affine, (4.0, 4.0, 4.0), (24, 28, 32)) for ct, liver in cases]
    from sirtjax.segmentation.regseg import network_fields

    together = network_fields(model, (4.0, 4.0, 4.0), pairs)
    for pair, field in zip(pairs, together):
        alone = network_fields(model, (4.0, 4.0, 4.0), [pair])[0]
        assert field.shape == (24, 28, 32, 3) and float(np.abs(field).max()) > 0.1
        np.testing.assert_allclose(field, alone, atol=1e-4)


def _pairs(n: int = 2) -> list[TrainPair]:
    """Blob pairs on a 4 mm network grid: the moving liver shifted by 12 mm."""
    out = []
    for s in range(n):
        f, fl = _ct((16, 16, 16), (4.0, 4.0, 4.0), (-30.0, -30.0, -30.0), np.eye(3))
        m, ml = _ct((16, 16, 16), (4.0, 4.0, 4.0), (-30.0, -30.0, -30.0), np.eye(3), shift_mm=(12.0 * (-1) ** s, 4.0, 0.0), liver_hu=150.0)
        win = lambda v: np.clip(np.asarray(v.array) / 400.0, -0.5, 0.5).astype(np.float32)  # noqa: E731
        out.append(TrainPair(f"blob{s}", win(f), np.asarray(fl.array, np.float32), win(m), np.asarray(ml.array, np.float32)))
    return out


def _config(**kw):
    raw = {"model": SPEC, "train_seeds": [0], "val_seeds": [1], "crop": [16, 16, 16], "batch_size": 1, "n_phantom": 1,
           "epochs": 1, "steps_per_cascade": 2, "learning_rate": 0.01, **kw}
    return parse_regseg_config(raw)


def test_a_cascade_step_aligns_the_livers():
    """Steps of cascade 0 on one blob pair (Dice and bending only) bring its warped liver onto the fixed one."""
    import optax

    from sirtjax.train.regseg import cascade_step

    pair = _pairs(1)
    cfg = _config(model=TWO, w_mi=0.0, w_bend=1.0, learning_rate=0.003)
    model = build_model(TWO, rngs=nnx.Rngs(params=0))
    graphdef, state = nnx.split(model)
    before = validate(model, pair, cfg.spacing_mm)["blob0"]
    opt = optax.adam(cfg.learning_rate).init(state["cascades"][0])
    batch = tuple(np.asarray(a)[None] for a in (pair[0].fixed, pair[0].fixed_mask, pair[0].moving, pair[0].moving_mask))
    for i in range(40):
        state, opt, _ = cascade_step(state, opt, batch, jax.random.key(i), graphdef=graphdef, c=0, learning_rate=cfg.learning_rate,
                                     weights=cfg.loss_weights(), mi_samples=cfg.mi_samples, spacing_mm=cfg.spacing_mm)
    after = validate(nnx.merge(graphdef, state), pair, cfg.spacing_mm)["blob0"]
    assert after > before + 0.04, (before, after)


def test_training_resumes_after_a_kill_and_trains_one_cascade_at_a_time(tmp_path):
    """Killed after the first phase, only cascade 0 has changed; resumed (cascade 0 trained again in the second epoch,
    from its restored Adam state), the run ends where an uninterrupted one does."""
    pairs = _pairs()
    spec = TWO
    cfg = _config(model=spec, epochs=2)
    init = param_arrays(build_model(spec, rngs=nnx.Rngs(params=jax.random.fold_in(jax.random.key(cfg.seed), 1))))
    whole = train_regseg(cfg, tmp_path / "whole", pairs=(pairs, pairs), progress=lambda _: None)
    killed = train_regseg(cfg, tmp_path / "killed", pairs=(pairs, pairs), stop_after_phases=1, progress=lambda _: None)
    model = build_model(spec, rngs=nnx.Rngs(params=0))
    nnx.update(model, killed["params"])
    after = param_arrays(model)
    assert {k.split("/")[1] for k in init if not np.array_equal(init[k], after[k])} == {"0"}
    resumed = train_regseg(cfg, tmp_path / "killed", pairs=(pairs, pairs), progress=lambda _: None)
    a, b = (jax.tree.leaves(r["params"]) for r in (whole, resumed))
    assert len(a) == len(b) and resumed["epochs"] == 2
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_config_and_pairs_checks():
    from sirtjax.errors import InputError

    assert pair_seeds([1, 2, 3], [1]) == [(1, 1), (2, 2), (3, 3), (1, 2), (2, 3), (3, 1)]
    with pytest.raises(InputError, match="overlap"):
        _config(val_seeds=[0])
    with pytest.raises(InputError, match="synth_seeds"):
        _config(batch_size=2)
    with pytest.raises(InputError, match="bad config value"):
        _config(stepz=3)
    with pytest.raises(InputError, match="bad config value"):
        _config(crop=5)
    with pytest.raises(InputError, match="isotropic"):
        _config(batch_size=2, synth_seeds=[0], model={**SPEC, "spacing_mm": [4.0, 4.0, 5.0]})


def test_synthetic_pairs_show_one_anatomy_twice():
    from sirtjax.train.label_maps import stack_label_maps
    from sirtjax.train.synth import synth_pairs
    from sirtjax.train.regseg import PAIR_SYNTH

    tissue = np.zeros((40, 40, 40), np.uint8)
    tissue[5:35, 5:35, 5:35] = 3
    liver = np.full(tissue.shape, 255, np.uint8)
    liver[12:28, 10:30, 12:26] = 0
    maps = stack_label_maps([(tissue, liver)], n_foreground=64)
    f, fl, m, ml = synth_pairs(jax.random.key(0), maps, batch_size=2, patch=(24, 24, 24), spacing_mm=2.0, source_mm=2.0,
                               cfg=dataclasses.replace(PAIR_SYNTH, slice_mm=(2.0, 2.0)))
    assert f.shape == m.shape == fl.shape == ml.shape == (2, 24, 24, 24)
    assert float(jnp.min(f)) >= -0.5 and float(jnp.max(f)) <= 0.5
    for b in range(2):
        assert 0.5 < float(fl[b].sum()) / float(ml[b].sum()) < 2.0  # the same liver, moved a little
        assert dice(np.asarray(fl[b]) > 0, np.asarray(ml[b]) > 0) > 0.4
        assert not np.allclose(np.asarray(f[b]), np.asarray(m[b]))  # rendered twice

"""Losses, patch sampling, training steps, checkpoint/resume, configs and the Decathlon loader."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sirtjax.errors import InputError
from sirtjax.io import write_volume
from sirtjax.models import build_model
from sirtjax.train import AugmentConfig, Case, msd_cases, parse_config, soft_dice_loss, stack_cases, train
from sirtjax.train.augment import rotation_matrix
from sirtjax.train.data import sample_batch
from sirtjax.train.step import init_opt_state, make_optimizers, make_train_step, plateau_update
from sirtjax.volume import make_volume

NO_AUG = AugmentConfig(max_rotation_deg=0.0, elastic_mm=0.0, intensity_shift=0.0, intensity_scale=0.0)
TINY_MODEL = {"arch": "residual_unet3d", "features": [2, 4], "dropout_rate": 0.0, "tile_out": [8, 8, 8]}


def blob_case(seed, shape=(12, 14, 16)):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    label = (np.sum((grid - rng.uniform(4, 8, 3)) ** 2, -1) < rng.uniform(3, 4) ** 2).astype(np.uint8)
    image = np.where(label, 0.3, -0.2) + 0.05 * rng.normal(size=shape)
    return Case(f"blob{seed}", image.astype(np.float32), label, (3.0, 3.0, 3.0))


def tiny_config(**overrides):
    raw = {
        "model": TINY_MODEL,
        "data": {"kind": "phantom", "train_seeds": [], "val_seeds": [], "images": {}},
        "patch_out": [8, 8, 8],
        "steps": 6,
        "batch_size": 2,
        "steps_per_epoch": 3,
        "checkpoint_every": 2,
        "loss": "dice_ce",
        "learning_rate": 1e-2,
    }
    return parse_config({**raw, **overrides})


def test_soft_dice_hand_values():
    labels = jnp.zeros((1, 2, 2, 2, 1)).at[0, 0, 0, :2].set(1.0)  # 2 of 8 voxels
    half = soft_dice_loss(jnp.zeros((1, 2, 2, 2, 1)), labels)  # p = 0.5 everywhere
    np.testing.assert_allclose(half, 1 - (2 * 0.5 * 2 + 1) / (0.5 * 8 + 2 + 1), rtol=1e-6)
    perfect = soft_dice_loss(jnp.where(labels > 0, 30.0, -30.0), labels)
    assert float(perfect[0]) < 1e-6


def test_rotation_matrix_is_a_rotation():
    r = rotation_matrix(jnp.array([0.3, -0.2, 0.5]))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    assert float(jnp.linalg.det(r)) == pytest.approx(1.0, abs=1e-6)


def test_patches_without_augmentation_are_exact_crops():
    """Identity augmentation reads the patch straight out of the volume; labels are its centre."""
    cases = [blob_case(0)]
    data = stack_cases(cases, n_foreground=16)
    x, y = sample_batch(jax.random.key(3), data, batch_size=1, in_patch=(5, 7, 9), out_patch=(3, 3, 5),
                        spacing_zyx_mm=(3.0, 3.0, 3.0), aug=NO_AUG, foreground_prob=1.0)
    img, lab = cases[0].image, cases[0].label
    # find the crop position from the first voxel (values are continuous random, so unique)
    z, yy, xx = np.argwhere(np.isclose(img, float(x[0, 0, 0, 0, 0]), atol=1e-6))[0]
    np.testing.assert_allclose(x[0, ..., 0], img[z : z + 5, yy : yy + 7, xx : xx + 9], atol=1e-5)  # order-1 at integer points
    np.testing.assert_array_equal(y[0, ..., 0], lab[z + 1 : z + 4, yy + 2 : yy + 5, xx + 2 : xx + 7])


def test_noise_augmentation_spreads_tissue_and_leaves_clipped_voxels():
    """noise_max adds white noise of std uniform in [0, noise_max] inside the window only, then clips."""
    from sirtjax.train.augment import augment_intensity

    patch = jnp.concatenate([jnp.full((8, 32, 32), 0.1), jnp.full((8, 32, 32), -0.5), jnp.full((8, 32, 32), 0.5)])
    cfg = dataclasses.replace(NO_AUG, noise_max=0.2)
    sds = []
    for k in range(40):
        out = np.asarray(augment_intensity(jax.random.key(k), patch, cfg))
        np.testing.assert_array_equal(out[8:], np.asarray(patch[8:]))  # air and bone clipped by the window stay
        assert out.min() >= -0.5 and out.max() <= 0.5
        assert abs(out[:8].mean() - 0.1) < 0.01
        sds.append(out[:8].std())
    assert max(sds) < 0.2 and min(sds) < 0.03 and np.mean(sds) == pytest.approx(0.1, abs=0.025)  # uniform in [0, 0.2]
    np.testing.assert_array_equal(augment_intensity(jax.random.key(0), patch, NO_AUG), patch)  # noise_max 0: unchanged


def test_remap_gives_random_contrasts_with_air_near_the_floor():
    """remap_prob 1: every patch gets a random contrast in the MR window; air stays near the floor; two tissues swap
    order between draws; every voxel of a tissue gets the same map value (only Rician noise spreads it)."""
    from sirtjax.train.augment import augment_intensity

    patch = jnp.concatenate([jnp.full((4, 16, 16), 0.1), jnp.full((4, 16, 16), -0.2), jnp.full((4, 16, 16), -0.5)])
    cfg = dataclasses.replace(NO_AUG, remap_prob=1.0)
    brighter = []
    for k in range(40):
        out = np.asarray(augment_intensity(jax.random.key(k), patch, cfg))
        assert out.min() >= -0.5 and out.max() <= 0.5
        a, b, air = out[:4].mean(), out[4:8].mean(), out[8:].mean()
        assert air < -0.4
        assert max(out[:4].std(), out[4:8].std()) < 0.07  # one map value per tissue; only the Rician noise (<= 5 %) spreads it
        brighter.append(a > b)
    assert 8 < sum(brighter) < 32  # neither tissue is always the brighter one
    half = dataclasses.replace(NO_AUG, remap_prob=0.5)
    changed = [not np.array_equal(np.asarray(augment_intensity(jax.random.key(k), patch, half)), np.asarray(patch)) for k in range(40)]
    assert 10 < sum(changed) < 30


def test_correlated_noise_has_unit_std_and_the_correlation_of_its_blur():
    """The blurred noise keeps std 1 for every sigma, its neighbour correlation is that of its sampled Gaussian, and
    it is scipy's blur of the same white noise divided by the blur's std."""
    from scipy import ndimage as ndi

    from sirtjax.train.augment import correlated_noise

    for sigma in (0.0, 0.5, 1.0, 1.5):
        noise = np.asarray(correlated_noise(jax.random.key(3), (40, 40, 40), jnp.float32(sigma), 1.5))
        inner = noise[6:-6, 6:-6, 6:-6]
        assert inner.std() == pytest.approx(1.0, abs=0.03)
        rho = np.mean(inner[:, :, 1:] * inner[:, :, :-1]) / inner.var()
        k = np.exp(-0.5 * (np.arange(-6, 7) / max(sigma, 0.05)) ** 2)
        assert rho == pytest.approx(np.sum(k[1:] * k[:-1]) / np.sum(k * k), abs=0.03)  # 0, 0.26, 0.61, 0.80
    white = np.asarray(jax.random.normal(jax.random.key(3), (40, 40, 40)))
    ref = ndi.gaussian_filter(white, 1.0, mode="nearest", truncate=4.0)
    ours = np.asarray(correlated_noise(jax.random.key(3), (40, 40, 40), jnp.float32(1.0), 1.5))
    g = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    g /= g.sum()
    np.testing.assert_allclose(ours[5:-5, 5:-5, 5:-5], ref[5:-5, 5:-5, 5:-5] / np.sqrt(np.sum(g * g)) ** 3, atol=1e-4)


def test_case_weights_set_sampling_frequency():
    """Sampling weights: a weight-0 case is never drawn; weights 1:3 draw the second case ~3x as often."""
    a, b = blob_case(0), blob_case(1)
    a = dataclasses.replace(a, image=np.full_like(a.image, -0.3))  # tell the cases apart by intensity
    b = dataclasses.replace(b, image=np.full_like(b.image, 0.4))
    kw = dict(batch_size=400, in_patch=(3, 3, 3), out_patch=(1, 1, 1), spacing_zyx_mm=(3.0, 3.0, 3.0), aug=NO_AUG, foreground_prob=0.0)
    x, _ = sample_batch(jax.random.key(0), stack_cases([dataclasses.replace(a, weight=0.0), b]), **kw)
    assert np.all(np.asarray(x[:, 1, 1, 1, 0]) > 0)
    x, _ = sample_batch(jax.random.key(1), stack_cases([a, dataclasses.replace(b, weight=3.0)]), **kw)
    frac_b = float(np.mean(np.asarray(x[:, 1, 1, 1, 0]) > 0))
    assert abs(frac_b - 0.75) < 0.07  # binomial sd for n=400 is 0.022; 3 sd
    with pytest.raises(ValueError, match="weights"):
        stack_cases([dataclasses.replace(a, weight=0.0)])


def test_train_steps_lower_the_loss_and_do_not_recompile():
    model = build_model(TINY_MODEL, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    adam, plateau = make_optimizers(1e-2, factor=0.2, patience=1, min_scale=1e-3)
    opt_state = init_opt_state(adam, plateau, params)
    step = make_train_step(graphdef, 1e-2, "dice_ce")  # the resume test's step: one compile for both
    data = stack_cases([blob_case(1)], n_foreground=64)
    x, y = sample_batch(jax.random.key(0), data, batch_size=2, in_patch=(8, 8, 8), out_patch=(8, 8, 8),
                        spacing_zyx_mm=(3.0, 3.0, 3.0), aug=NO_AUG, foreground_prob=1.0)
    calls_before = step._cache_size()
    losses = []
    for _ in range(8):
        params, opt_state, terms = step(params, opt_state, x, y)
        losses.append(float(terms["loss"]))
    assert losses[-1] < losses[0] - 0.05
    assert step._cache_size() <= max(calls_before, 1)  # no recompilation across steps
    # reduce-on-plateau (patience 1): the first validation sets the best DSC, the next without improvement scales by 0.2
    for dsc in (0.5, 0.5):
        opt_state = plateau_update(plateau, opt_state, params, dsc)
    assert float(opt_state.plateau.scale) == pytest.approx(0.2)


def test_resume_after_kill_continues_identically(tmp_path):
    """Stop after step 5 (last checkpoint at 4), resume: final state equals an uninterrupted run."""
    cfg = tiny_config()
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    full = train(cfg, tmp_path / "a", cases=cases, progress=False)
    killed = train(cfg, tmp_path / "b", cases=cases, stop_after=5, progress=False)
    assert killed["step"] == 5
    resumed = train(cfg, tmp_path / "b", cases=cases, progress=False)
    assert resumed["step"] == 6
    for a, b in zip(jax.tree.leaves(full["params"]), jax.tree.leaves(resumed["params"])):
        np.testing.assert_array_equal(a, b)
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_dice" in r] == [3, 6]
    assert (tmp_path / "b" / "best" / "weights.npz").is_file()
    assert resumed["best_val_dice"] == pytest.approx(full["best_val_dice"])


def test_weight_average_is_validated_kept_and_resumed(tmp_path):
    """ema_decay: best/ holds the running average of the weights, recomputed here in numpy from each step's weights;
    a killed run resumes to the same average."""
    cfg = tiny_config(ema_decay=0.7, steps=3, steps_per_epoch=3)
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    history = [jax.tree.leaves(train(cfg, tmp_path / f"s{n}", cases=cases, stop_after=n, progress=False)["params"]) for n in range(3)]
    full = train(cfg, tmp_path / "a", cases=cases, progress=False)
    history.append(jax.tree.leaves(full["params"]))
    expected = [np.asarray(leaf, np.float64) for leaf in history[0]]
    for step_leaves in history[1:]:
        expected = [0.7 * e + 0.3 * np.asarray(w, np.float64) for e, w in zip(expected, step_leaves)]
    from sirtjax.models import load_model

    kept, spec = load_model(str(tmp_path / "a" / "best"))
    assert spec["step"] == 3
    final, final_spec = load_model(str(tmp_path / "a" / "final"))
    assert final_spec == spec
    for a, b in zip(jax.tree.leaves(nnx.split(kept)[1]), jax.tree.leaves(nnx.split(final)[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kept_leaves = jax.tree.leaves(nnx.split(kept)[1])
    assert len(kept_leaves) == len(expected)
    for k, e, w in zip(kept_leaves, expected, history[-1]):
        np.testing.assert_allclose(np.asarray(k), e, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(np.asarray(k), np.asarray(w)) for k, w in zip(kept_leaves, history[-1]))  # not the last weights
    train(cfg, tmp_path / "s2", cases=cases, progress=False)  # the run killed after step 2 (its checkpoint), resumed
    resumed, _ = load_model(str(tmp_path / "s2" / "best"))
    for a, b in zip(kept_leaves, jax.tree.leaves(nnx.split(resumed)[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(InputError, match="ema_decay"):
        tiny_config(ema_decay=1.0)


def test_config_validation_and_cli(tmp_path, capsys):
    with pytest.raises(InputError, match="steps"):
        tiny_config(steps=0)
    with pytest.raises(InputError, match="bad config key"):
        tiny_config(unknown_key=1)
    noisy = {"kind": "phantom", "train_seeds": [], "val_seeds": [], "images": {}, "noisy_ct": {"images": {"maa_ct": "ct"}, "ct_noise_hu": [35, 80]}}
    with pytest.raises(InputError, match="ct_noise_index_hu"):
        tiny_config(data=noisy)
    assert tiny_config(data=noisy, model=TINY_MODEL | {"ct_noise_index_hu": 20.0}).data["noisy_ct"]["ct_noise_hu"] == [35, 80]
    with pytest.raises(InputError, match="ct_noise_index_hu needs an isotropic model spacing"):
        tiny_config(model=TINY_MODEL | {"ct_noise_index_hu": 20.0, "spacing_mm": [3.0, 3.0, 5.0]})
    for bad_noisy in ({"images": {"diag_ct": "ct"}, "ct_noise_hu": [35, 80]}, {"images": {"maa_ct": "ct"}, "ct_noise_hu": [80, 35]}, {"images": {"maa_ct": "ct"}}):
        with pytest.raises(InputError, match="noisy_ct needs images"):
            tiny_config(data=noisy | {"noisy_ct": bad_noisy}, model=TINY_MODEL | {"ct_noise_index_hu": 20.0})
    from sirtjax.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(bad)])
    assert exc.value.code == 2 and "bad.json" in capsys.readouterr().err


def test_decathlon_layout(tmp_path):
    """imagesTr/labelsTr NIfTI pairs; labels 1 and 2 (liver, tumour) both count as liver."""
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[3:7, 4:8, 5:9] = 1
    lab[4:6, 5:7, 6:8] = 2
    direction = np.diag([-1.0, -1.0, 1.0])
    for name in ("liver_0.nii.gz", "liver_1.nii.gz"):
        write_volume(make_volume(np.where(lab > 0, 60, -900).astype(np.int16), (3, 3, 3), (0, 0, 0), direction), tmp_path / "imagesTr" / name)
        write_volume(make_volume(lab, (3, 3, 3), (0, 0, 0), direction), tmp_path / "labelsTr" / name)
    cases = msd_cases(tmp_path, modality="ct", spacing_mm=(3, 3, 3), label_values=(1, 2))
    assert [c.name for c in cases] == ["liver_0", "liver_1"]
    assert cases[0].label.sum() == (lab > 0).sum()  # same spacing, flipped axes: nearest keeps every voxel
    assert cases[0].image.max() == pytest.approx(60 / 400 + 0.0, abs=1e-5)  # 60 HU -> (60 + 200) / 400 - 0.5
    (tmp_path / "labelsTr" / "liver_1.nii.gz").unlink()
    with pytest.raises(InputError, match="no label"):
        msd_cases(tmp_path, modality="ct", spacing_mm=(3, 3, 3), label_values=(1,))


def test_noisy_ct_cases_are_prepared_as_inference_prepares_them(tmp_path):
    """Noise levels spread evenly over the seeds; each image is the study rendered at its level and noise-matched
    to the model, as `prepare_image` does at inference; the cache gives the same cases back."""
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.segmentation.preprocess import prepare_image, prepare_label
    from sirtjax.train.data import make_case, noisy_ct_cases

    kw = dict(spacing_mm=(3.0, 3.0, 3.0), ct_noise_index_hu=20.0, weight=2.0, cache_dir=tmp_path)
    cases = noisy_ct_cases([3, 4], {"maa_ct": "ct"}, (35.0, 80.0), **kw)
    assert [(c.name, c.weight) for c in cases] == [("seed3_maa_ct_noise35hu_match20hu_tv", 2.0), ("seed4_maa_ct_noise80hu_match20hu_tv", 2.0)]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == [f"{c.name}.npz" for c in cases]
    study = generate_study(4, PhantomConfig(ct_noise_hu=80.0))
    matched = prepare_image(study.images["maa_ct"], "ct", (3.0, 3.0, 3.0), ct_noise_index_hu=20.0)
    raw = prepare_image(study.images["maa_ct"], "ct", (3.0, 3.0, 3.0))
    np.testing.assert_array_equal(cases[1].image, np.asarray(matched.array))
    assert np.std(np.diff(cases[1].image, axis=2)) < 0.7 * np.std(np.diff(np.asarray(raw.array), axis=2))  # it was smoothed
    np.testing.assert_array_equal(cases[1].label, np.asarray(prepare_label(study.images["maa_ct_liver"], matched).array) == 1)
    with pytest.raises(ValueError, match="lesion"):
        make_case("x", study.images["maa_ct"], study.images["maa_ct_lesions"], "ct", (3.0, 3.0, 3.0), None, study.images["maa_ct_liver"], 0.0, 20.0)
    again = noisy_ct_cases([3, 4], {"maa_ct": "ct"}, (35.0, 80.0), **kw)
    assert [(c.name, c.weight) for c in again] == [(c.name, c.weight) for c in cases]
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) for a, b in zip(cases, again))


@pytest.mark.slow
def test_data_parallel_two_devices_matches_one():
    """The sharded step on 2 host devices gives the single-device loss (subprocess with forced devices)."""
    code = """
import jax, numpy as np
from flax import nnx
from sirtjax.models import build_model
from sirtjax.train.step import make_optimizers, init_opt_state, make_train_step, data_parallel
assert len(jax.local_devices()) == 2
m = build_model({"arch": "residual_unet3d", "features": [2, 4]}, rngs=nnx.Rngs(0))
g, p = nnx.split(m)
adam, plat = make_optimizers(1e-3, factor=0.2, patience=1, min_scale=1e-3)
s = init_opt_state(adam, plat, p)
x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8, 1)); y = (x > 0).astype(np.float32)
step = make_train_step(g, 1e-3, "dice")
_, _, t1 = step(p, s, x, y)
bs, rep = data_parallel(2)
_, _, t2 = step(jax.device_put(p, rep), jax.device_put(s, rep), jax.device_put(x, bs), jax.device_put(y, bs))
print(abs(float(t1["loss"]) - float(t2["loss"])))
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5  # float32 all-reduce order


def test_init_from_starts_from_given_weights(tmp_path):
    """init_from loads a trained model's weights as the start of a new run; a wrong architecture is refused."""
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    first = train(tiny_config(), tmp_path / "a", cases=cases, progress=False)
    assert first["step"] == 6
    from sirtjax.models import load_model
    from sirtjax.models.store import param_arrays

    started = train(tiny_config(init_from=str(tmp_path / "a")), tmp_path / "b", cases=cases, stop_after=0, progress=False)
    model = build_model(TINY_MODEL, rngs=nnx.Rngs(0))
    nnx.update(model, started["params"])
    expected = param_arrays(load_model(tmp_path / "a")[0])
    got = param_arrays(model)
    assert expected.keys() == got.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
    wider = {**TINY_MODEL, "features": [3, 4]}
    with pytest.raises(InputError, match="only a thesis_liver_unet can be widened"):
        train(tiny_config(model=wider, init_from=str(tmp_path / "a")), tmp_path / "c", cases=cases, stop_after=0, progress=False)


def test_init_from_freezes_the_instance_norms_of_a_model_on_training_tiles(tmp_path):
    """A config without norms that starts from an instance-normalised model gets its norms folded into the
    convolutions (kernels rescaled per output channel) from the run's training batches."""
    from sirtjax.models import load_model, save_model
    from sirtjax.models.store import param_arrays

    spec = {"arch": "thesis_liver_unet", "features": [2, 2, 2, 2], "norm": "instance", "tile_out": [2, 2, 2]}
    save_model(build_model(spec, rngs=nnx.Rngs(1)), spec, tmp_path / "a")
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    cfg = tiny_config(model={**spec, "norm": None}, patch_out=[2, 2, 2], init_from=str(tmp_path / "a"))
    started = train(cfg, tmp_path / "b", cases=cases, stop_after=0, progress=False)
    model = build_model(cfg.model, rngs=nnx.Rngs(0))
    nnx.update(model, started["params"])
    got, old = param_arrays(model), param_arrays(load_model(tmp_path / "a")[0])
    assert not any("/norms/" in k for k in got)
    ratio = got["down/1/convs/0/kernel"] / old["down/1/convs/0/kernel"]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0, 0, 0, :1, :], ratio.shape), rtol=1e-4)  # one factor per output
    assert not np.allclose(ratio, 1.0)


KILLED_TRAINING = """
import sys
sys.path.insert(0, sys.argv[2])
from test_train import blob_case, tiny_config
from sirtjax.train import train
cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
train(tiny_config(steps=100000, checkpoint_every=2), sys.argv[1], cases=cases, progress=False)
"""


@pytest.mark.slow  # 28 s; test_resume_after_kill_continues_identically covers resuming in the default run
def test_training_killed_by_sigkill_resumes(tmp_path):
    """A real SIGKILL during training: the next run resumes from the last complete checkpoint."""
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(run), os.path.dirname(__file__)])
    try:
        deadline = time.monotonic() + 240
        latest = run / "checkpoints" / "latest"
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(p.name) for p in latest.glob("*") if p.name.isdigit()] if latest.is_dir() else []
            if steps and max(steps) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the training ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = max(int(p.name) for p in latest.glob("*") if p.name.isdigit())
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    resumed = train(tiny_config(steps=done + 4, checkpoint_every=2), run, cases=cases, progress=False)
    assert resumed["step"] == done + 4  # continued from the checkpoint, not from 0
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == done + 4


def test_deepmedic_trains_validates_and_predicts_through_the_loop(tmp_path, capsys):
    """DeepMedic goes through the U-Nets' sampler, step, validation, checkpoints and sliding window unchanged."""
    from sirtjax.models import DeepMedic, load_model
    from sirtjax.segmentation.infer import predict_array

    spec = {"arch": "deepmedic", "features": [2, 2], "factors": [2, 4], "context": 4, "fusion_features": 4, "tile_out": [8, 8, 8]}
    cfg = tiny_config(model=spec, augment={"flip_prob": [0.0, 0.0, 0.5]})
    out = train(cfg, tmp_path / "run", cases=([blob_case(i) for i in range(2)], [blob_case(9)]), progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert out["step"] == 6 and [r["step"] for r in log if "val_dice" in r] == [3, 6]
    model, loaded = load_model(tmp_path / "run")
    assert isinstance(model, DeepMedic) and loaded["arch"] == "deepmedic" and loaded["flip_axes"] == [2]
    probs = predict_array(model, blob_case(9).image, max_out_tile=(8, 8, 8))
    assert probs.shape == (12, 14, 16, 1) and np.all((probs >= 0) & (probs <= 1))
    mirrored = predict_array(model, blob_case(9).image[..., ::-1], max_out_tile=(8, 8, 8))[..., ::-1, :]
    np.testing.assert_allclose(predict_array(model, blob_case(9).image, max_out_tile=(8, 8, 8), flips=(2,)),
                               (probs + mirrored) / 2, atol=1e-5)
    from sirtjax.cli import main
    from sirtjax.io import read_volume

    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = make_volume((blob_case(9).image * 400).astype(np.int16), (2.0, 2.5, 4.0), (10.0, -20.0, 5.0), direction)
    write_volume(image, tmp_path / "ct.nii.gz")
    spec_path = tmp_path / "run" / "best" / "model.json"  # a declared noise level below this CT's (20 HU): filtered
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "ct_noise_index_hu": 5.0}))
    main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "mask.nii.gz"), "--model", str(tmp_path / "run"), "--modality", "ct", "--tta"])
    assert "(model: 5 HU): denoised before segmentation" in capsys.readouterr().out
    mask = read_volume(tmp_path / "mask.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.spacing_mm, image.spacing_mm) and np.allclose(mask.direction, direction)


SEGMENTATION_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "segmentation"


@pytest.mark.parametrize("name", sorted(p.name for p in SEGMENTATION_CONFIGS.glob("*.json")))
def test_shipped_training_configs_parse_and_build(name):
    """Every config the README and the model cards point to parses, and its model builds with a valid training tile."""
    from sirtjax.train import load_config

    cfg = load_config(SEGMENTATION_CONFIGS / name)
    model = nnx.eval_shape(lambda: build_model(cfg.model, rngs=nnx.Rngs(0)))
    assert all(o >= p for o, p in zip(model.output_shape(model.input_shape_for(cfg.patch_out)), cfg.patch_out))


def test_relative_init_from_resolves_beside_the_config_for_both_model_kinds(tmp_path):
    """A relative init_from folder is read beside the config (U-Net and regseg alike); a shipped name stays a name."""
    from sirtjax.train.config import resolve_init_from

    (tmp_path / "runs" / "stage1").mkdir(parents=True)
    config = tmp_path / "configs" / "x.json"
    config.parent.mkdir()
    assert resolve_init_from({"init_from": "../runs/stage1"}, config)["init_from"] == str((tmp_path / "runs" / "stage1").resolve())
    assert resolve_init_from({"init_from": "liver"}, config)["init_from"] == "liver"
    assert resolve_init_from({}, config) == {}


def test_training_cache_script_lists_every_regseg_pair_and_map():
    """scripts/prepare_training_cache.py prepares a regseg config's 36 training pairs, 2 validation pairs and 12 maps."""
    import runpy

    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "prepare_training_cache.py"))
    from sirtjax.train.config import read_json_config

    config = Path(__file__).parents[1] / "configs" / "regseg" / "regseg_gpu.json"
    jobs = script["regseg_jobs"](read_json_config(config), config, "cache")
    pairs = [args[0] for fn, args in jobs if fn.__name__ == "_pair"]
    assert len(pairs) == len(set(pairs)) == 38 and (100, 100) in pairs and (0, 1) in pairs and (0, 5) in pairs
    assert sorted(args[0] for fn, args in jobs if fn.__name__ == "_synth") == list(range(12))


def test_training_cache_script_prepares_the_files_training_reads(tmp_path, monkeypatch):
    """A seed's job of scripts/prepare_training_cache.py writes the noise-matched cases that training then reads unrendered."""
    import runpy

    import sirtjax.phantom
    from sirtjax.train.loop import load_cases

    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "prepare_training_cache.py"))
    model = {**TINY_MODEL, "ct_noise_index_hu": 20.0}
    data = {"kind": "phantom", "train_seeds": [3], "val_seeds": [], "images": {"maa_ct": "ct"},
            "noisy_ct": {"images": {"maa_ct": "ct"}, "ct_noise_hu": [35.0, 80.0]}}
    cfg = tiny_config(model=model, data=data)
    jobs = script["real_and_synth_jobs"](cfg, str(tmp_path))
    assert len(jobs) == 1 and "noisy_ct" not in jobs[0][1][0].data
    fn, args = jobs[0]
    assert fn(args) == "seed3_maa_ct_match20hu_tv"

    def no_render(*a, **k):
        raise AssertionError("training rendered a study that the script should have prepared")

    monkeypatch.setattr(sirtjax.phantom, "generate_study", no_render)
    clean = {k: v for k, v in data.items() if k != "noisy_ct"}
    train_cases, _ = load_cases(tiny_config(model=model, data=clean), tmp_path)
    assert [c.name for c in train_cases] == ["seed3_maa_ct_match20hu_tv"]


def test_a_config_extends_another_beside_it(tmp_path):
    """``extends`` merges a config under the one that names it (objects key by key, lists replaced); a cycle is a
    one-line error naming the file."""
    from sirtjax.train.config import read_json_config

    (tmp_path / "base.json").write_text(json.dumps({"model": {"arch": "a", "features": [1, 2]}, "steps": 5, "seed": 1}))
    (tmp_path / "child.json").write_text(json.dumps({"extends": "base.json", "model": {"features": [3]}, "seed": 2}))
    assert read_json_config(tmp_path / "child.json") == {"model": {"arch": "a", "features": [3]}, "steps": 5, "seed": 2}
    (tmp_path / "loop.json").write_text(json.dumps({"extends": "loop2.json"}))
    (tmp_path / "loop2.json").write_text(json.dumps({"extends": "loop.json"}))
    with pytest.raises(InputError, match="loop2.json.*extends loop.json, which extends it again"):
        read_json_config(tmp_path / "loop.json")


def test_validated_steps_are_kept_and_averaged(tmp_path):
    """keep_validated keeps every validated step's weights (validated/STEP/); scripts/average_models.py writes their
    element-wise mean, which loads as a model, and refuses folders of another architecture."""
    import runpy

    from sirtjax.models import load_model

    cfg = tiny_config(keep_validated=True, steps=6, steps_per_epoch=3)
    cases = ([blob_case(i) for i in range(2)], [blob_case(9)])
    train(cfg, tmp_path / "run", cases=cases, progress=False)
    folders = [tmp_path / "run" / "validated" / s for s in ("3", "6")]
    assert all((f / "weights.npz").is_file() for f in folders)
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "average_models.py"))
    script["average_models"](folders, tmp_path / "soup")
    soup, spec = load_model(str(tmp_path / "soup"))
    assert spec["step"] == [3, 6] and "val_dice" not in spec
    members = [np.load(f / "weights.npz") for f in folders]
    kept = np.load(tmp_path / "soup" / "weights.npz")
    assert any(not np.allclose(members[0][k], members[1][k]) for k in kept.files)  # the steps differ
    for k in kept.files:
        np.testing.assert_allclose(kept[k], (members[0][k].astype(np.float64) + members[1][k]) / 2, rtol=1e-6, atol=1e-7)
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "weights.npz", w=np.zeros(3))
    (other / "model.json").write_text("{}")
    with pytest.raises(SystemExit, match="another architecture"):
        script["average_models"]([folders[0], other], tmp_path / "bad")


def test_data_variants_render_the_studies_again_with_their_phantom_options(tmp_path, monkeypatch):
    """data.variants renders every training and validation seed again with the variant's phantom options (over
    data.phantom_options), names the cases with its tag and weighs the training ones; a malformed variant is a one-line error."""
    import sirtjax.phantom
    from sirtjax.train import data as train_data
    from sirtjax.train.loop import load_cases

    rendered = []

    def fake_make_case(name, *args, **kwargs):
        return dataclasses.replace(blob_case(len(rendered)), name=name)

    class FakeStudy:
        images = {"diag_ct": None, "diag_ct_liver": None}

    def fake_study(seed, config):
        rendered.append((seed, tuple(config.liver_scale), tuple(config.bmi)))
        return FakeStudy()

    monkeypatch.setattr(sirtjax.phantom, "generate_study", fake_study)
    monkeypatch.setattr(train_data, "make_case", fake_make_case)
    variant = {"tag": "small_liver", "phantom_options": {"liver_scale": [0.7, 0.85]}, "images": {"diag_ct": "ct"}, "weight": 2.0}
    data = {"kind": "phantom", "train_seeds": [3], "val_seeds": [100], "images": {"diag_ct": "ct"},
            "phantom_options": {"bmi": [20.0, 22.0]}, "variants": [variant]}
    train, val = load_cases(tiny_config(data=data), None)
    assert [c.name for c in train] == ["seed3_diag_ct", "seed3_diag_ct_small_liver"]
    assert [c.name for c in val] == ["seed100_diag_ct", "seed100_diag_ct_small_liver"]
    assert [c.weight for c in train] == [1.0, 2.0]
    default_scale = sirtjax.phantom.PhantomConfig().liver_scale
    assert rendered == [(3, default_scale, (20.0, 22.0)), (100, default_scale, (20.0, 22.0)),
                        (3, (0.7, 0.85), (20.0, 22.0)), (100, (0.7, 0.85), (20.0, 22.0))]
    for bad in ({**variant, "tag": "a b"}, {k: v for k, v in variant.items() if k != "images"}, {**variant, "weight": -1}):
        with pytest.raises(InputError, match="data.variants needs"):
            tiny_config(data={**data, "variants": [bad]})

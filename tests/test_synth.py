"""The domain-randomised generator (sirtjax.train.synth): geometry, contrast, acquisition, edits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from sirtjax.phantom import PhantomConfig
from sirtjax.phantom.raster import Tissue
from sirtjax.phantom.study import canonical_patient
from sirtjax.train.config import parse_config
from sirtjax.train.label_maps import FLUID, patient_maps, stack_label_maps
from sirtjax.train.synth import SynthConfig, _blur_axis, _edit_anatomy, _resample_axis, mixed_sampler, synth_batch

# every randomisation off: the patch reads the map on the model grid, one constant per tissue
PLAIN = SynthConfig(
    max_rotation_deg=0.0, scale_range=(1.0, 1.0), elastic_mm=0.0, std_max=0.0, dark_air_prob=0.0, bias_max=0.0,
    slice_mm=(1.0, 1.0), blur_max_vox=0.0, gamma_std=0.0, noise_max=0.0, rician_prob=0.0, fov_cut_prob=0.0,
    ascites_prob=0.0, resection_prob=0.0,
)


@pytest.fixture(scope="module")
def patient():
    can = canonical_patient(3, PhantomConfig.small())
    return can, patient_maps(can)


def _batch(maps, spacing, cfg, key=0, n=2, patch=(21, 21, 21), out=(11, 11, 11), fg=1.0):
    return synth_batch(
        jax.random.key(key), maps, batch_size=n, in_patch=patch, out_patch=out, spacing_mm=spacing, source_mm=spacing, cfg=cfg, foreground_prob=fg
    )


def test_patient_maps_liver_distance_matches_scipy(patient):
    can, (tissue, liver_mm) = patient
    assert tissue.shape == liver_mm.shape == can.tissue.shape and tissue.dtype == liver_mm.dtype == np.uint8
    liver = liver_mm == 0
    assert liver.sum() > 100 and np.mean(tissue[liver] == Tissue.LIVER) > 0.5
    ref = np.clip(np.ceil(ndimage.distance_transform_edt(~liver, sampling=can.spacing_mm)), 0, 255)
    np.testing.assert_array_equal(liver_mm, ref)


def test_maps_of_different_grids_are_padded_about_their_centre(patient):
    """A narrower map (no arms) is padded with air, far from the liver, to the widest grid; its liver stays put."""
    _, (tissue, liver_mm) = patient
    wide = (np.pad(tissue, [(0, 0), (0, 0), (5, 6)]), np.pad(liver_mm, [(0, 0), (0, 0), (5, 6)], constant_values=255))
    maps = stack_label_maps([(tissue, liver_mm), wide], n_foreground=64)
    assert maps.tissue.shape == (2, *wide[0].shape)
    np.testing.assert_array_equal(maps.tissue[0, :, :, 5:-6], tissue)
    np.testing.assert_array_equal(maps.liver_mm[0, :, :, 5:-6], liver_mm)
    assert np.all(np.asarray(maps.tissue[0, :, :, :5]) == Tissue.AIR) and np.all(np.asarray(maps.liver_mm[0, :, :, -6:]) == 255)
    fg = np.asarray(maps.foreground[0])
    assert np.all(np.asarray(maps.liver_mm[0])[fg[:, 0], fg[:, 1], fg[:, 2]] == 0)  # foreground indices on the padded grid
    with pytest.raises(ValueError, match="differ in shape"):
        stack_label_maps([(tissue, liver_mm[:-1])])


def test_plain_patch_is_the_label_map_read_at_the_patch_voxels(patient):
    can, pair = patient
    maps = stack_label_maps([pair], n_foreground=64)
    x, y = _batch(maps, can.spacing_mm, PLAIN, n=3)
    assert x.shape == (3, 21, 21, 21, 1) and y.shape == (3, 11, 11, 11, 1)
    tissue, liver_mm = pair
    for b in range(3):
        # find the foreground centre this sample used: the label crop must equal the liver map there
        img = np.asarray(x[b, ..., 0])
        lab = np.asarray(y[b, ..., 0])
        hits = [
            tuple(c) for c in np.asarray(maps.foreground[0])
            if np.array_equal((liver_mm == 0)[c[0] - 5 : c[0] + 6, c[1] - 5 : c[1] + 6, c[2] - 5 : c[2] + 6].astype(np.float32), lab)
        ]
        assert hits, "the label is not a crop of the liver map at any foreground centre"
        cz, cy, cx = hits[0]
        codes = tissue[cz - 10 : cz + 11, cy - 10 : cy + 11, cx - 10 : cx + 11]
        # one intensity per tissue code: the image is a function of the tissue map
        for code in np.unique(codes):
            assert np.ptp(img[codes == code]) < 1e-6


def test_deterministic_per_key_and_in_the_window(patient):
    can, pair = patient
    maps = stack_label_maps([pair], n_foreground=64)
    a = _batch(maps, can.spacing_mm, SynthConfig(), key=5)
    b = _batch(maps, can.spacing_mm, SynthConfig(), key=5)
    c = _batch(maps, can.spacing_mm, SynthConfig(), key=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert float(a[0].min()) >= -0.5 and float(a[0].max()) <= 0.5 and set(np.unique(a[1])) <= {0.0, 1.0}


def test_field_of_view_cut_is_outside_and_unlabelled(patient):
    can, pair = patient
    maps = stack_label_maps([pair], n_foreground=64)
    x, y = _batch(maps, can.spacing_mm, dataclasses.replace(PLAIN, fov_cut_prob=1.0, dark_air_prob=0.0, mean_range=(0.2, 0.4)), n=4, patch=(21, 21, 21), out=(21, 21, 21))
    outside = np.asarray(x[..., 0]) == -0.5  # tissue means are >= 0.2, so only the cut reads -0.5
    assert outside.any() and (~outside).any()
    assert np.all(np.asarray(y[..., 0])[outside] == 0)


def test_ascites_replaces_fat_and_bowel_near_the_liver_only():
    liver_mm = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None], (10, 4, 4))  # distance grows along z
    tissue = np.where(np.arange(4)[None, :, None] < 2, Tissue.FAT, Tissue.MUSCLE).astype(np.uint8) * np.ones((10, 4, 4), np.uint8)
    cfg = dataclasses.replace(PLAIN, ascites_prob=1.0, ascites_max_mm=3.0)  # thickness exactly 3 mm
    edited, liver = _edit_anatomy(jax.random.key(0), jnp.asarray(tissue), jnp.asarray(liver_mm), jnp.zeros((3, 10, 4, 4)), cfg)
    expected = np.where((liver_mm > 0) & (liver_mm <= 3) & (tissue == Tissue.FAT), FLUID, tissue)
    np.testing.assert_array_equal(np.asarray(edited), expected)  # muscle is never replaced
    np.testing.assert_array_equal(np.asarray(liver), (liver_mm == 0).astype(np.float32))


def test_blur_axis_matches_scipy_and_resample_keeps_sampled_slices():
    x = jax.random.normal(jax.random.key(0), (9, 30, 7))
    ours = np.asarray(_blur_axis(x, jnp.float32(1.5), axis=1))
    ref = ndimage.gaussian_filter1d(np.asarray(x), 1.5, axis=1, mode="nearest", truncate=8 / 1.5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(_blur_axis(x, jnp.float32(0.0), axis=0)), np.asarray(x), atol=1e-6)
    np.testing.assert_allclose(np.asarray(_resample_axis(x, jnp.float32(1.0), axis=1)), np.asarray(x), atol=1e-6)
    r = np.asarray(_resample_axis(x, jnp.float32(3.0), axis=1))
    np.testing.assert_allclose(r[:, ::3], np.asarray(x)[:, ::3], atol=1e-6)  # slices every 3 voxels are kept
    line = jnp.arange(30, dtype=jnp.float32)[None, :, None] * jnp.ones((2, 1, 2))
    np.testing.assert_allclose(np.asarray(_resample_axis(line, jnp.float32(3.0), axis=1))[:, :28], np.asarray(line)[:, :28], atol=1e-5)  # linear is exact


def test_mixed_sampler_puts_real_patches_first():
    real = lambda k: (jnp.zeros((1, 2, 2, 2, 1)), jnp.zeros((1, 1, 1, 1, 1)))  # noqa: E731
    synth = lambda k: (jnp.ones((3, 2, 2, 2, 1)), jnp.ones((3, 1, 1, 1, 1)))  # noqa: E731
    x, y = mixed_sampler(real, synth)(jax.random.key(0))
    assert x.shape[0] == 4 and float(x[0].max()) == 0 and float(x[1:].min()) == 1
    assert mixed_sampler(None, synth) is synth


def test_config_parses_the_synth_section():
    raw = {
        "model": {"arch": "thesis_liver_unet", "features": [2, 4, 8, 16]}, "data": {"kind": "phantom"}, "patch_out": [5, 5, 5], "steps": 2,
        "batch_size": 4, "synth": {"seeds": [1, 2], "variants": [{"liver_scale": [0.8, 1.2]}], "n_real": 1, "generator": {"slice_mm": [2, 6]}},
    }
    cfg = parse_config(raw)
    assert cfg.synth.seeds == (1, 2) and cfg.synth.generator.slice_mm == (2, 6) and cfg.synth.variants[0]["liver_scale"] == (0.8, 1.2)
    with pytest.raises(Exception, match="n_real"):
        parse_config({**raw, "synth": {**raw["synth"], "n_real": 4}})


def test_scanner_contrasts_window_as_inference_windows():
    """The scanner-like table: a CT's tissues at their HU in the [-200, 200] HU window, T1 fat bright and fluid dark,
    every code of the generator valued, the real scans' codes included."""
    from sirtjax.train.contrasts import CONTRASTS, contrast_table
    from sirtjax.train.label_maps import N_CODES
    from sirtjax.train import anatomy

    table = contrast_table()
    assert table.shape == (len(CONTRASTS), N_CODES) and np.all(np.abs(table) <= 0.5)
    nc, ce, t1 = (table[CONTRASTS.index(c)] for c in ("nc_ct", "ce_ct", "mr_t1"))
    assert nc[Tissue.AIR] == -0.5 and nc[Tissue.FAT] == pytest.approx((-100 + 200) / 400 - 0.5, abs=0.03)
    assert ce[Tissue.LIVER] > nc[Tissue.LIVER] > nc[Tissue.MUSCLE] - 0.03  # enhancement; liver about muscle natively
    assert t1[Tissue.FAT] == 0.5 and t1[Tissue.GALLBLADDER] < t1[Tissue.LIVER]
    assert ce[anatomy.PANCREAS] > nc[anatomy.PANCREAS] and t1[anatomy.CYST] < t1[Tissue.LIVER]


def test_realistic_patches_take_a_scanners_contrast():
    """With realistic_prob 1 a patch's liver and fat stand where some scanner's contrast puts them; with 0, the
    random means range over the whole window."""
    tissue = np.full((30, 30, 30), Tissue.FAT, np.uint8)
    tissue[8:22, 8:22, 8:22] = Tissue.LIVER
    liver_mm = np.where(tissue == Tissue.LIVER, 0, 20).astype(np.uint8)
    maps = stack_label_maps([(tissue, liver_mm)], n_foreground=16)
    quiet = dict(bias_max=0.0, slice_mm=(1.0, 1.0), blur_max_vox=0.0, gamma_std=0.0, noise_max=0.0, std_max=0.0,
                 fov_cut_prob=0.0, ascites_prob=0.0, resection_prob=0.0, max_rotation_deg=0.0, elastic_mm=0.0,
                 scale_range=(1.0, 1.0))
    from sirtjax.train.contrasts import contrast_table

    table = contrast_table()
    for p in (1.0, 0.0):
        x, _ = synth_batch(jax.random.key(2), maps, batch_size=16, in_patch=(9, 9, 9), out_patch=(9, 9, 9), spacing_mm=2.0,
                           source_mm=2.0, cfg=SynthConfig(realistic_prob=p, realistic_jitter=0.0, **quiet), foreground_prob=1.0)
        centre = np.asarray(x)[:, 4, 4, 4, 0]
        near_a_scanner = [np.min(np.abs(table[:, Tissue.LIVER] - v)) < 1e-3 for v in centre]
        assert all(near_a_scanner) if p == 1.0 else not any(near_a_scanner)

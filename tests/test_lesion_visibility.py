"""Training labels only for lesions the image shows (the Rose criterion), checked against scipy.ndimage."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from sirtjax.phantom.raster import Tissue
from sirtjax.train.data import make_case
from sirtjax.segmentation.visibility import lesion_cnr, visible_lesions
from sirtjax.train.label_maps import stack_label_maps
from sirtjax.train.synth import synth_batch
from sirtjax.train.synth_lesions import LesionConfig, lesion_ids, n_lesion_ids
from sirtjax.volume import make_volume
from test_synth import PLAIN


def _liver_with_lesions(contrasts, noise_sd=0.1, seed=0):
    """A noisy liver block (value 0) with one 4^3-voxel lesion per contrast, ids 1.., on a 40 x 24 x 24 grid."""
    rng = np.random.default_rng(seed)
    image = noise_sd * rng.standard_normal((40, 24, 24)).astype(np.float32)
    ids = np.zeros(image.shape, np.int32)
    for i, c in enumerate(contrasts):
        sl = (slice(4 + 9 * i, 8 + 9 * i), slice(10, 14), slice(10, 14))
        ids[sl] = i + 1
        image[sl] += c
    liver = np.ones(image.shape, bool)
    liver[:, :2] = False  # some non-liver, excluded from the rings
    image[~liver] = 5.0
    return image, ids, liver


def test_lesion_cnr_matches_scipy_ring_statistics():
    """The integrated CNR per lesion is |mean in - mean of the liver ring| / ring std * sqrt(n), as scipy computes it."""
    image, ids, liver = _liver_with_lesions([0.05, 0.2, 0.6, -0.4])
    cnr, n_ring = lesion_cnr(jnp.asarray(image), jnp.asarray(ids), jnp.asarray(liver & (ids == 0)), 5, ring_vox=3)
    for j in range(1, 5):
        ring = ndimage.binary_dilation(ids == j, np.ones((7, 7, 7), bool)) & liver & (ids == 0)
        ring &= ~ndimage.binary_dilation(ids > j, np.ones((7, 7, 7), bool))  # where rings meet, the higher id takes the voxel
        inside = image[ids == j]
        expect = abs(inside.mean() - image[ring].mean()) / image[ring].std() * np.sqrt(inside.size)
        assert int(n_ring[j]) == ring.sum()
        np.testing.assert_allclose(float(cnr[j]), expect, rtol=1e-3)


def test_visible_lesions_keep_those_above_the_rose_threshold_only():
    """64-voxel lesions in noise 0.1: contrast 0.05 (expected CNR 4) is not shown, 0.2 and -0.4 (CNR 16, 32) are."""
    image, ids, liver = _liver_with_lesions([0.05, 0.2, -0.4])
    visible = np.asarray(visible_lesions(jnp.asarray(image), jnp.asarray(ids), jnp.asarray(liver & (ids == 0)), 4))
    np.testing.assert_array_equal(visible, [False, False, True, True])
    # a lesion with no liver around it cannot be judged and keeps its label
    alone = np.asarray(visible_lesions(jnp.asarray(image), jnp.asarray(ids), jnp.zeros(ids.shape, bool), 4))
    np.testing.assert_array_equal(alone, [False, True, True, True])


def test_lesion_ids_give_phantom_lesions_and_their_cores_one_id_and_painted_slots_their_own():
    tissue = jnp.asarray([Tissue.LIVER, Tissue.LESION + 2, Tissue.NECROSIS + 2, Tissue.LESION, 24, Tissue.LESION + 1, 63], jnp.uint8)
    slots = jnp.asarray([0, 0, 0, 0, 3, 5, 0], jnp.int32)
    ids = np.asarray(lesion_ids(tissue, slots, max_lesions=12))
    np.testing.assert_array_equal(ids, [0, 15, 15, 13, 3, 5, 0])
    assert ids.max() < n_lesion_ids(LesionConfig(max_lesions=12))


def test_make_case_labels_only_the_lesions_the_rendering_shows():
    """A realistic case with min_cnr: the faint lesion (CNR about 1.6) leaves the label, the clear one stays whole."""
    image, ids, liver = _liver_with_lesions([0.01, 0.5], noise_sd=0.05)
    hu = make_volume(100.0 + 400.0 * image, spacing_mm=(2.0, 2.0, 2.0))  # the CT window is 400 HU wide
    lab, liv = hu.with_array(ids.astype(np.uint16)), hu.with_array(liver.astype(np.uint8))
    every = make_case("all", hu, lab, "ct", (2.0, 2.0, 2.0), None, liv)
    shown = make_case("shown", hu, lab, "ct", (2.0, 2.0, 2.0), None, liv, min_cnr=5.0)
    assert every.label.sum() == 128 and shown.label.sum() == 64
    assert np.all(every.label[shown.label > 0] == 1)
    np.testing.assert_array_equal(shown.image, every.image)


def _ball_maps():
    """Generator label maps of one patient: a 36 mm liver ball in fat on a 2 mm grid (no phantom lesions)."""
    z, y, x = np.mgrid[:48, :48, :48]
    r_mm = 2.0 * np.sqrt((z - 23.5) ** 2 + (y - 23.5) ** 2 + (x - 23.5) ** 2)
    tissue = np.where(r_mm < 36.0, Tissue.LIVER, Tissue.FAT).astype(np.uint8)
    liver_mm = np.clip(np.ceil(ndimage.distance_transform_edt(tissue != Tissue.LIVER, sampling=2.0)), 0, 255).astype(np.uint8)
    return stack_label_maps([(tissue, liver_mm)], n_foreground=64)


def test_synthetic_labels_drop_lesions_the_patch_does_not_show():
    """With min_cnr, small lesions 0.003 from the liver under noise of up to 0.3 lose their labels; clear ones on
    clean patches keep them all."""
    maps = _ball_maps()
    kw = dict(batch_size=3, in_patch=(25, 25, 25), out_patch=(25, 25, 25), spacing_mm=2.0, source_mm=2.0, foreground_prob=1.0, target="lesions")
    faint = LesionConfig(lesion_prob=1.0, max_lesions=4, diameter_mm=(5.0, 15.0), contrast_min=0.003, contrast_max=0.0031,
                         rim_prob=0.0, core_prob=0.0, calc_prob=0.0)
    noisy = dataclasses.replace(PLAIN, noise_max=0.3, mean_range=(0.1, 0.3))
    _, every = synth_batch(jax.random.key(5), maps, cfg=dataclasses.replace(noisy, lesions=faint), **kw)
    _, shown = synth_batch(jax.random.key(5), maps, cfg=dataclasses.replace(noisy, lesions=dataclasses.replace(faint, min_cnr=5.0)), **kw)
    assert float(every.sum()) > 50 and float(shown.sum()) == 0
    clear = dataclasses.replace(faint, diameter_mm=(5.0, 40.0), contrast_min=0.3, contrast_max=0.31)
    clean = dataclasses.replace(PLAIN, mean_range=(0.1, 0.3))
    _, every = synth_batch(jax.random.key(5), maps, cfg=dataclasses.replace(clean, lesions=clear), **kw)
    _, shown = synth_batch(jax.random.key(5), maps, cfg=dataclasses.replace(clean, lesions=dataclasses.replace(clear, min_cnr=5.0)), **kw)
    assert float(every.sum()) > 50
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(every))

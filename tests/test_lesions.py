"""Lesions: the generator's procedural lesions and lesion target, and lesion inference inside the liver."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from sirtjax.phantom import PhantomConfig
from sirtjax.phantom.raster import Tissue
from sirtjax.phantom.study import canonical_patient
from sirtjax.segmentation import segment_lesions
from sirtjax.segmentation.preprocess import LIVER_MARGIN_MM
from sirtjax.train.config import parse_config
from sirtjax.train.label_maps import patient_maps, stack_label_maps
from sirtjax.train.synth import synth_batch
from sirtjax.train.synth_lesions import BODY_CODES, CALC, RIM, LesionConfig, lesion_label, lesion_means, paint_lesions
from sirtjax.volume import make_volume
from test_synth import PLAIN  # every randomisation off


@pytest.fixture(scope="module")
def patient():
    can = canonical_patient(3, PhantomConfig.small())
    return can, patient_maps(can)


def _offsets(shape, spacing):
    return jnp.stack(jnp.meshgrid(*[(jnp.arange(n, dtype=jnp.float32) - (n - 1) / 2) * spacing for n in shape], indexing="ij"))


def test_painted_lesions_lie_in_the_liver_up_to_the_bulge():
    """Lesions are painted only within bulge_mm of the liver, carry the procedural codes, and count as lesion."""
    shape, spacing = (40, 40, 40), 2.0
    rel = _offsets(shape, spacing)
    r = jnp.sqrt(jnp.sum(rel**2, axis=0))
    liver_mm = jnp.clip(jnp.ceil(r - 25.0), 0, 255).astype(jnp.uint8)  # a 25 mm ball of liver
    tissue = jnp.where(liver_mm == 0, Tissue.LIVER, Tissue.FAT).astype(jnp.uint8)
    cfg = LesionConfig(lesion_prob=1.0, bulge_mm=3.0, diameter_mm=(8.0, 20.0))
    painted = [np.asarray(paint_lesions(jax.random.key(k), tissue, liver_mm, rel, cfg)[0]) for k in range(6)]
    for out in painted:
        new = out != np.asarray(tissue)
        assert new.any()
        assert np.all(np.asarray(liver_mm)[new] <= 3)
        assert set(np.unique(out[new])) <= {*BODY_CODES, RIM, 27, CALC}
        np.testing.assert_array_equal(np.asarray(lesion_label(jnp.asarray(out))) > 0, new)
    assert not np.array_equal(painted[0], painted[1])
    none, _ = paint_lesions(jax.random.key(0), tissue, liver_mm, rel, dataclasses.replace(cfg, lesion_prob=0.0))
    np.testing.assert_array_equal(np.asarray(none), np.asarray(tissue))


def test_phantom_lesions_and_cores_are_lesion_but_fluid_is_not():
    codes = jnp.asarray([Tissue.LIVER, Tissue.LESION, Tissue.LESION + 5, Tissue.NECROSIS + 2, 63, Tissue.CLIP, 24, 28])
    np.testing.assert_array_equal(np.asarray(lesion_label(codes)), [0, 1, 1, 1, 0, 0, 1, 1])


def test_lesion_bodies_differ_from_the_liver_by_the_stated_contrast():
    cfg = LesionConfig(contrast_min=0.1, contrast_max=0.2)
    for k in range(20):
        means = jax.random.uniform(jax.random.key(100 + k), (64,), minval=-0.6, maxval=0.6)
        out = np.asarray(lesion_means(jax.random.key(k), means, cfg))
        diff = np.abs(out[[*BODY_CODES, *range(Tissue.LESION, Tissue.NECROSIS)]] - out[Tissue.LIVER])
        assert np.all(diff >= 0.1 - 1e-6) and np.all(diff <= 0.2 + 1e-6)
        assert abs(out[CALC]) >= 0.4


def test_lesion_target_patches_see_only_the_liver_region(patient):
    """target 'lesions': the label is the lesion codes, and the input is padding beyond LIVER_MARGIN_MM of the liver."""
    can, pair = patient
    maps = stack_label_maps([pair], n_foreground=64)
    cfg = dataclasses.replace(PLAIN, lesions=LesionConfig(lesion_prob=1.0), mean_range=(0.1, 0.3))
    x, y = synth_batch(jax.random.key(3), maps, batch_size=3, in_patch=(25, 25, 25), out_patch=(25, 25, 25),
                       spacing_mm=can.spacing_mm, source_mm=can.spacing_mm, cfg=cfg, foreground_prob=1.0, target="lesions")
    x, y = np.asarray(x[..., 0]), np.asarray(y[..., 0])
    assert y.sum() > 0 and set(np.unique(y)) <= {0.0, 1.0}
    assert np.all(x[y > 0] > -0.5)  # every lesion voxel is visible
    # the same draw as a liver target: its padding is the fov only, so every padded voxel here is far from the liver
    xl, yl = synth_batch(jax.random.key(3), maps, batch_size=3, in_patch=(25, 25, 25), out_patch=(25, 25, 25),
                         spacing_mm=can.spacing_mm, source_mm=can.spacing_mm, cfg=cfg, foreground_prob=1.0)
    xl, yl = np.asarray(xl[..., 0]), np.asarray(yl[..., 0])
    assert (x == -0.5).any() and np.all(yl[x == -0.5] == 0)
    np.testing.assert_array_equal(x[x > -0.5], xl[x > -0.5])
    for b in range(3):  # the visible region reaches LIVER_MARGIN_MM beyond the liver label, no further
        dist = ndimage.distance_transform_edt(yl[b] == 0, sampling=can.spacing_mm)
        assert np.all(dist[x[b] > -0.5] <= LIVER_MARGIN_MM + 2 * can.spacing_mm)


def test_config_takes_a_lesion_target_and_generator_lesions():
    raw = {"model": {"arch": "thesis_liver_unet", "features": [2, 4, 8, 16], "target": "lesions"}, "data": {"kind": "phantom"},
           "patch_out": [5, 5, 5], "steps": 2, "batch_size": 4,
           "synth": {"seeds": [1], "n_real": 1, "generator": {"lesions": {"max_lesions": 4, "diameter_mm": [6, 30]}}}}
    cfg = parse_config(raw)
    assert cfg.target == "lesions" and cfg.synth.generator.lesions == LesionConfig(max_lesions=4, diameter_mm=(6, 30))
    with pytest.raises(Exception, match="target"):
        parse_config({**raw, "model": {**raw["model"], "target": "spleen"}})


class _Bright(nnx.Module):
    """A stand-in lesion 'network': the logit of windowed intensity above 0.25 (bright blobs are lesions)."""

    def input_shape_for(self, out):
        return tuple(out)

    def output_shape(self, inp):
        return tuple(inp)

    def __call__(self, x):
        return 60.0 * (x - 0.25)


def test_segment_lesions_on_an_oblique_anisotropic_grid():
    """Bright spheres in the liver become instances 1..n by decreasing volume at their physical size; one outside
    the liver and one below MIN_LESION_ML are not reported."""
    spacing = np.array([1.5, 1.2, 2.5])
    theta = np.deg2rad(20)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shape = (48, 90, 80)
    origin = np.array([-40.0, 10.0, 5.0])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij"), -1).reshape(-1, 3)  # x, y, z
    world = (origin + (idx * spacing) @ direction.T).reshape(*shape[::-1], 3).transpose(2, 1, 0, 3)
    centre = world[24, 45, 40]
    liver = np.linalg.norm(world - centre, axis=-1) < 45.0
    image = np.where(liver, 50.0, -100.0)
    spheres = [(np.array([15.0, 0, 0]), 12.0), (np.array([-15.0, 5, 0]), 8.0), (np.array([0, -25.0, 5]), 1.4), (np.array([0, 0, 55.0]), 8.0)]
    for offset, radius in spheres:
        image[np.linalg.norm(world - centre - offset, axis=-1) < radius] = 150.0
    vol = make_volume(image.astype(np.float32), spacing, origin, direction)
    seg = segment_lesions(_Bright(), {"target": "lesions", "spacing_mm": [1.0, 1.0, 1.0], "tile_out": [64, 64, 64]},
                          vol, vol.with_array(liver.astype(np.uint8)), modality="ct")
    labels = np.asarray(seg.labels.array)
    assert labels.shape == shape and [les.id for les in seg.lesions] == [1, 2]
    for les, (offset, radius) in zip(seg.lesions, spheres[:2]):
        inside = np.linalg.norm(world - centre - offset, axis=-1) < radius
        assert np.mean(labels[inside] == les.id) > 0.9
        assert les.volume_ml == pytest.approx(4 / 3 * np.pi * radius**3 / 1000, rel=0.15)
        assert les.diameter_mm == pytest.approx(2 * radius, rel=0.06) and les.confidence > 0.8
    assert labels[~liver].max() == 0
    with pytest.raises(ValueError, match="target"):
        segment_lesions(_Bright(), {"spacing_mm": [1.0, 1.0, 1.0]}, vol, vol.with_array(liver.astype(np.uint8)), modality="ct")


def _window(hu):
    return (hu + 200.0) / 400.0 - 0.5  # the CT window of the network input


class _Band(_Bright):
    """A stand-in lesion 'network' that marks voxels of 52 HU or 150 HU, whatever surrounds them."""

    def __call__(self, x):
        return 200.0 * (0.01 - jnp.minimum(jnp.abs(x - _window(52.0)), jnp.abs(x - _window(150.0))))


def test_segment_lesions_keeps_only_what_the_image_shows():
    """Of two marked spheres in a liver of 50 +- 20 HU (a 3D checkerboard), the faint one (2 HU above the liver: an
    integrated contrast-to-noise ratio of about 2 / 20 * sqrt(voxels) = 3) is dropped by Rose's k = 5 and the clear one
    (100 HU above) is renumbered 1; with min_cnr 0 both are kept, by decreasing volume, with the ratios that scipy's
    dilation and numpy's statistics give on the 3-voxel ring of each."""
    shape = (40, 64, 64)
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    liver = np.linalg.norm(zyx - [20, 32, 32], axis=-1) < 19.0
    image = np.where(liver, np.where(zyx.sum(-1) % 2 == 0, 30.0, 70.0), -100.0)
    faint = np.linalg.norm(zyx - [20, 32, 22], axis=-1) < 6.0
    clear = np.linalg.norm(zyx - [20, 32, 43], axis=-1) < 4.0
    image[faint], image[clear] = 52.0, 150.0
    vol = make_volume(image.astype(np.float32), [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], np.eye(3))
    spec = {"target": "lesions", "spacing_mm": [1.0, 1.0, 1.0], "tile_out": [64, 64, 64]}
    mask = vol.with_array(liver.astype(np.uint8))
    expected = {}
    for name, sphere in (("faint", faint), ("clear", clear)):
        ring = ndimage.binary_dilation(sphere, np.ones((7, 7, 7), bool)) & liver & ~faint & ~clear
        expected[name] = abs(image[sphere].mean() - image[ring].mean()) / image[ring].std() * np.sqrt(sphere.sum())
    assert 2.5 < expected["faint"] < 5.0 < expected["clear"]

    shown = segment_lesions(_Band(), spec, vol, mask, modality="ct")
    labels = np.asarray(shown.labels.array)
    assert [les.id for les in shown.lesions] == [1] and np.all(labels[clear] == 1) and labels[faint].max() == 0
    assert labels.max() == 1 and shown.lesions[0].cnr == pytest.approx(expected["clear"], rel=0.05)

    every = segment_lesions(_Band(), spec, vol, mask, modality="ct", min_cnr=0.0)
    labels = np.asarray(every.labels.array)
    assert [les.id for les in every.lesions] == [1, 2] and np.all(labels[faint] == 1) and np.all(labels[clear] == 2)
    assert [les.cnr for les in every.lesions] == pytest.approx([expected["faint"], expected["clear"]], rel=0.05)


def test_describe_lesions_equals_scipy_over_the_whole_array():
    """Each lesion's volume, confidence and peak, taken within the lesions' bounding box, equal scipy's over the whole
    array (ids with gaps, a margin of background, lesions touching the array's faces or not)."""
    from scipy import ndimage

    from sirtjax.segmentation.lesions import describe_lesions

    rng = np.random.default_rng(3)
    labels = np.zeros((30, 40, 50), np.int32)
    labels[5:9, 10:14, 20:26] = 1
    labels[12:20, 30:40, 3:9] = 2  # touches the y face
    labels[25:27, 2:4, 40:45] = 5  # id 3 and 4 absent
    prob = rng.random(labels.shape).astype(np.float32)
    got = describe_lesions(labels, prob, 0.5, np.array([np.nan, 7.0, np.nan, np.nan, np.nan, 3.0]))
    assert [les.id for les in got] == [1, 2, 5] and [les.cnr for les in got] == [7.0, None, 3.0]
    ids = [1, 2, 5]
    np.testing.assert_allclose([les.volume_ml for les in got], ndimage.sum_labels(np.ones(labels.shape), labels, ids) * 0.5)
    np.testing.assert_allclose([les.confidence for les in got], ndimage.mean(prob, labels, ids), rtol=1e-12)
    np.testing.assert_array_equal([les.peak_probability for les in got], ndimage.maximum(prob, labels, ids))
    assert describe_lesions(np.zeros((3, 3, 3), np.int32), np.zeros((3, 3, 3)), 1.0) == ()

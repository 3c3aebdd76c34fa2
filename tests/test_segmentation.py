"""Sliding-window inference, canonical-grid geometry, post-processing and the `segment` command."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage
from scipy.spatial.transform import Rotation

from sirtjax.metrics import dice
from sirtjax.segmentation import (
    canonical_grid,
    fill_holes,
    gaussian_weights,
    instance_labels,
    largest_component,
    predict_probability,
    sliding_window,
    tile_starts,
)
from sirtjax.volume import make_volume, world_grid


@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.99])
@pytest.mark.parametrize(("size", "tile"), [(10, 4), (7, 7), (3, 8), (33, 10), (56, 55), (110, 55), (9, 1)])
def test_tile_starts_cover_evenly(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(max(size, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:size].all() and starts[0] == 0
    if size > tile:
        gaps = np.diff(starts)
        # gaps at most the step (rounded to whole voxels), no repeated start, evenly spread
        assert starts[-1] == size - tile and gaps.max() <= max(1.0, tile * (1 - overlap)) + 0.5 and gaps.min() >= 1
        assert gaps.max() - gaps.min() <= 1


def test_tile_starts_spread_evenly_as_nnunet():
    """112 voxels in tiles of 55 at half overlap: 4 tiles at 0, 19, 38, 57 (a fixed step of 28 would put two at 56 and 57)."""
    assert tile_starts(112, 55, 0.5) == [0, 19, 38, 57]
    assert tile_starts(128, 55, 0.5) == [0, 24, 49, 73] and tile_starts(80, 55, 0.5) == [0, 25]


def crop_predictor(margin):
    """A known 'network': the centre of each input tile, so the blended output must equal the input."""
    return lambda batch: batch[:, margin[0] : batch.shape[1] - margin[0], margin[1] : batch.shape[2] - margin[1], margin[2] : batch.shape[3] - margin[2]]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("shape", [(13, 17, 9), (4, 5, 6)])
def test_sliding_window_reassembles_identity(shape, batch_size):
    """Tiles, margins, partial edge tiles, padding and batching place every voxel exactly."""
    image = np.random.default_rng(0).normal(size=(*shape, 2)).astype(np.float32)
    out_tile, margin = (6, 8, 5), (2, 3, 1)
    in_tile = tuple(o + 2 * m for o, m in zip(out_tile, margin))
    out = sliding_window(crop_predictor(margin), image, in_tile=in_tile, out_tile=out_tile, batch_size=batch_size)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-6)  # weighted mean of equal values, float32


@pytest.mark.parametrize("shifts", [(0, 3), (2, 0), (0, 5, 40)])
@pytest.mark.parametrize("shape", [(13, 17, 9), (4, 5, 6)])
def test_shifted_placements_reassemble_identity(shape, shifts):
    """Every placement of the tiling (shifts beyond a tile are clamped to it, less one voxel) still places every voxel
    exactly; the padding in front never reaches the output."""
    image = np.random.default_rng(3).normal(size=(*shape, 2)).astype(np.float32)
    out_tile, margin = (6, 8, 5), (2, 3, 1)
    in_tile = tuple(o + 2 * m for o, m in zip(out_tile, margin))
    out = sliding_window(crop_predictor(margin), image, in_tile=in_tile, out_tile=out_tile, shifts=shifts, batch_size=2)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-6)


def test_a_shifted_placement_moves_every_tile_back():
    """A placement shifted by s has the tiles of the unshifted one, each moved back by s voxels along every axis (the
    front ones reaching into the padding): twice the tiles for two placements, blended together. A tiling without
    the unshifted placement, which reaches the image's end, is refused."""
    from sirtjax.preprocess import PAD_VALUE

    image = np.random.default_rng(5).uniform(-0.5, 0.5, (23, 19, 17, 1)).astype(np.float32)
    net = lambda batch: 60.0 * (batch - batch.mean(axis=(1, 2, 3), keepdims=True))  # depends on its tile
    kw = {"in_tile": (8, 8, 8), "out_tile": (8, 8, 8), "sigma_scale": 0.4, "batch_size": 1}
    seen = []
    both = sliding_window(lambda batch: seen.extend(batch.copy()) or net(batch), image, shifts=(0, 3), **kw)
    starts = [tile_starts(n, 8, 0.5) for n in image.shape[:3]]
    padded = np.pad(image, [(3, 0)] * 3 + [(0, 0)], constant_values=PAD_VALUE)  # padded[i] is image[i - 3]
    unshifted = [padded[z + 3 : z + 11, y + 3 : y + 11, x + 3 : x + 11] for z in starts[0] for y in starts[1] for x in starts[2]]
    shifted = [padded[z : z + 8, y : y + 8, x : x + 8] for z in starts[0] for y in starts[1] for x in starts[2]]
    np.testing.assert_array_equal(np.stack(seen), np.stack(unshifted + shifted))
    plain = sliding_window(net, image, **kw)
    assert np.abs(both - plain).max() > 0.1  # the placements disagree, and both are blended
    for bad in ((-1, 0), (3,)):
        with pytest.raises(ValueError, match="shifts"):
            sliding_window(net, image, shifts=bad, **kw)


def test_sliding_window_gaussian_blend():
    """Where two tiles overlap the result is their Gaussian-weighted mean (nnU-Net blending)."""
    calls = []

    def tile_id(batch):
        calls.append(len(calls))
        return np.full(batch.shape, float(len(calls) - 1), np.float32)

    for sigma_scale in (0.125, 0.5):
        calls.clear()
        out = sliding_window(tile_id, np.zeros((12, 3, 3, 1), np.float32), in_tile=(8, 3, 3), out_tile=(8, 3, 3), sigma_scale=sigma_scale)
        w = gaussian_weights((8, 3, 3), sigma_scale)[:, 1, 1]
        # tiles start at z = 0 and 4: voxel z = 5 is local 5 of tile 0 and local 1 of tile 1
        np.testing.assert_allclose(out[5, 1, 1, 0], w[1] / (w[5] + w[1]), rtol=1e-6)
        np.testing.assert_allclose(out[:4, 1, 1, 0], 0.0)
        np.testing.assert_allclose(out[8:, 1, 1, 0], 1.0)
    # a wider Gaussian gives the farther tile centre more say: local voxel 1 lies 2.5 voxels from the centre of 8, the
    # peak voxels 0.5; sigma is 1 voxel at 0.125, 4 at 0.5
    for sigma_scale, sigma in ((0.125, 1.0), (0.5, 4.0)):
        peak_ratio = np.exp(-0.5 * (2.5**2 - 0.5**2) / sigma**2)
        assert gaussian_weights((8, 3, 3), sigma_scale)[1, 1, 1] == pytest.approx(peak_ratio, rel=1e-5)
    g = gaussian_weights((7, 5, 6))
    assert g.max() == pytest.approx(1.0) and g.min() > 0 and np.allclose(g, g[::-1, ::-1, ::-1])


class StepNet(nnx.Module):
    """Logits 60 * x on the centre of the tile (2-voxel margin): a known network for geometry tests."""

    def __init__(self):
        self.margin = 2

    def __call__(self, x):
        m = self.margin
        return 60.0 * x[:, m:-m, m:-m, m:-m, :]

    def input_shape_for(self, min_output):
        return tuple(int(n) + 2 * self.margin for n in min_output)

    def output_shape(self, input_shape):
        return tuple(int(n) - 2 * self.margin for n in input_shape)


def test_predict_probability_maps_back_on_anisotropic_oblique_grid():
    """An off-centre ellipsoid in world mm is found on an oblique, anisotropic input grid."""
    direction = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    vol = make_volume(np.zeros((40, 50, 60), np.int16), (2.5, 1.7, 3.5), (-60.0, -40.0, -50.0), direction)
    pts = np.asarray(world_grid(vol), np.float64)
    centre = pts[28, 20, 15]
    inside = np.sum(((pts - centre) / np.array([25.0, 18.0, 15.0])) ** 2, axis=-1) < 1.0
    image = vol.with_array(np.where(inside, 100, -100).astype(np.int16))
    spec = {"spacing_mm": [3.0, 3.0, 3.0], "tile_out": [20, 20, 20]}
    prob = predict_probability(StepNet(), spec, image, modality="ct", batch_size=2)
    assert prob.shape == vol.shape and np.allclose(prob.spacing_mm, vol.spacing_mm) and np.allclose(prob.direction, direction)
    mask = np.asarray(prob.array) > 0.5
    assert dice(mask, inside) > 0.9  # 3 mm canonical grid: ~1 mm of boundary blur on a ~20 mm radius
    shift_vox = np.abs(np.array(ndimage.center_of_mass(mask)) - np.array(ndimage.center_of_mass(inside)))
    assert np.all(shift_vox < 0.5)  # a flipped or shifted mapping would move it by many voxels


class TileMeanNet(StepNet):
    """Logits 60 * (x - the tile's mean) on the tile's centre: a known network whose output depends on its tile, as
    one with instance normalisation does, so the blending of overlapping tiles changes the result."""

    def __call__(self, x):
        return super().__call__(x - x.mean(axis=(1, 2, 3), keepdims=True))


def test_probability_on_blends_tiles_by_the_model_spec():
    """The spec's blend_sigma_scale and tile_shifts_vox reach the sliding window; without them nnU-Net's 0.125 and one
    placement are used."""
    from sirtjax.segmentation import predict_array, probability_on
    from sirtjax.segmentation.infer import foreground

    rng = np.random.default_rng(1)
    prepared = make_volume(rng.uniform(-0.5, 0.5, (30, 26, 22)).astype(np.float32), (3.0, 3.0, 3.0), (5.0, -2.0, 1.0), np.eye(3))
    spec = {"tile_out": [10, 10, 10]}
    expect = {s: foreground(predict_array(TileMeanNet(), prepared.array, max_out_tile=(10, 10, 10), sigma_scale=s)) for s in (0.125, 0.4)}
    assert np.abs(expect[0.4] - expect[0.125]).max() > 0.05
    for blend, key in ((0.125, {}), (0.4, {"blend_sigma_scale": 0.4})):
        prob = probability_on(TileMeanNet(), spec | key, prepared, prepared)
        np.testing.assert_allclose(np.asarray(prob.array), expect[blend], atol=1e-5)
    shifted = foreground(predict_array(TileMeanNet(), prepared.array, max_out_tile=(10, 10, 10), shifts=(0, 5)))
    assert np.abs(shifted - expect[0.125]).max() > 0.05
    prob = probability_on(TileMeanNet(), spec | {"tile_shifts_vox": [0, 5]}, prepared, prepared)
    np.testing.assert_allclose(np.asarray(prob.array), shifted, atol=1e-5)


def test_spec_problem_refuses_bad_tile_shifts():
    """A model folder whose placements are not voxel counts >= 0 is refused before any work."""
    from sirtjax.models.store import spec_problem

    assert spec_problem({"tile_shifts_vox": [0, 14]}, "liver", "ct") is None
    for bad in ([], [14], [0, -3], [0, 1.5], 14):
        assert "tile_shifts_vox" in spec_problem({"tile_shifts_vox": bad}, "liver", "ct")


class TwoClassNet(TileMeanNet):
    """Softmax logits (background, foreground): 0 and TileMeanNet's."""

    def __call__(self, x):
        fg = super().__call__(x)
        return jnp.concatenate([jnp.zeros_like(fg), fg], axis=-1)


@pytest.mark.parametrize("net", [TileMeanNet(), TwoClassNet()])
def test_tiles_cover_only_the_content_box(net):
    """Air (the padding value) around a body: the tiles cover the body's box alone, as if the image were that box,
    and beyond it the prediction is background (foreground probability 0, for sigmoid and softmax outputs alike)."""
    from sirtjax.segmentation import predict_array
    from sirtjax.segmentation.infer import content_box, foreground
    from sirtjax.segmentation.sliding_window import tile_starts

    rng = np.random.default_rng(4)
    image = np.full((40, 44, 48), -0.5, np.float32)
    image[6:31, 9:27, 12:45] = rng.uniform(-0.5, 0.5, (25, 18, 33))
    image[6, 9, 12] = image[30, 26, 44] = 0.2  # the box's corners hold content
    box = content_box(image[..., None])
    assert box == (slice(6, 31), slice(9, 27), slice(12, 45))
    assert len(tile_starts(18, 10, 0.5)) * 2 < len(tile_starts(44, 10, 0.5))  # fewer tiles to run along y
    got = foreground(predict_array(net, image, max_out_tile=(10, 10, 10), sigma_scale=0.4))
    alone = foreground(predict_array(net, image[box], max_out_tile=(10, 10, 10), sigma_scale=0.4))
    np.testing.assert_array_equal(got[box], alone)
    outside = np.ones(image.shape, bool)
    outside[box] = False
    assert np.all(got[outside] == 0.0) and alone.max() > 0.5
    full = np.full((6, 7, 8), -0.5, np.float32)  # all padding: kept whole
    assert content_box(full[..., None]) == (slice(0, 6), slice(0, 7), slice(0, 8))


@pytest.mark.parametrize("net", [TileMeanNet()])
def test_an_edge_margin_tiles_past_a_cut_border_as_if_the_scan_went_on_in_padding(net):
    """Content cut by the image's border along z (and surrounded by air in-plane): with an edge margin the
    prediction is that of the image padded by the margin beyond its z borders alone, cropped back; without one,
    of the content box as it is."""
    from sirtjax.segmentation import predict_array
    from sirtjax.segmentation.infer import foreground

    rng = np.random.default_rng(7)
    image = np.full((30, 36, 36), -0.5, np.float32)
    image[:, 6:30, 5:31] = rng.uniform(-0.5, 0.5, (30, 24, 26))  # the body reaches the first and last slice
    kw = dict(max_out_tile=(10, 10, 10), sigma_scale=0.4)  # 30 slices need several tiles along z
    from sirtjax.segmentation.infer import model_tiles
    from sirtjax.segmentation.sliding_window import sliding_window

    got = foreground(predict_array(net, image, edge_margin=4, **kw))
    region = np.pad(image[:, 6:30, 5:31], [(4, 4), (0, 0), (0, 0)], constant_values=-0.5)[..., None]  # box + margin in z
    in_tile, out_tile = model_tiles(net, region.shape[:3], kw["max_out_tile"])
    want = np.zeros(image.shape, np.float32)
    probs = sliding_window(lambda b: jax.nn.sigmoid(net(jnp.asarray(b))), region, in_tile=in_tile, out_tile=out_tile, sigma_scale=0.4)
    want[:, 6:30, 5:31] = probs[4:-4, ..., 0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, foreground(predict_array(net, image, **kw)))
    slab = image[:8]  # one tile holds it whole along z: no margin
    np.testing.assert_array_equal(foreground(predict_array(net, slab, edge_margin=4, **kw)), foreground(predict_array(net, slab, **kw)))


def test_the_content_box_of_a_clipped_smoothed_scanner_grid_ct_keeps_to_the_body():
    """A CT on a scanner's grid (0.78 x 0.78 x 1.25 mm, a body of 234 x 312 mm in a 400 mm field of view, 20 HU of
    noise), clipped to the window, anti-aliased and resampled to 3 mm as inference prepares it: its air reads the
    padding value only to within float error, and the content box still keeps to the body."""
    from sirtjax.segmentation.infer import content_box
    from sirtjax.segmentation.postprocess import foreground_box
    from sirtjax.segmentation.preprocess import prepare_image
    from sirtjax.volume import make_volume

    _, y, x = np.ogrid[:64, :513, :513]
    body = ((y - 256) / 150.0) ** 2 + ((x - 256) / 200.0) ** 2 < 1.0
    hu = (np.where(body, 40.0, -1000.0) + np.random.default_rng(0).normal(0.0, 20.0, (64, 513, 513))).astype(np.float32)
    prepared = np.asarray(prepare_image(make_volume(hu, (0.78, 0.78, 1.25), (-200.0, -200.0, 0.0)), "ct", (3.0, 3.0, 3.0)).array)
    assert foreground_box(prepared != -0.5) == tuple(slice(0, n) for n in prepared.shape)  # float error everywhere
    box = content_box(prepared[..., None])
    assert abs((box[1].stop - box[1].start) * 3.0 - 300 * 0.78) <= 12.0
    assert abs((box[2].stop - box[2].start) * 3.0 - 400 * 0.78) <= 12.0


def test_training_validation_blends_tiles_as_inference_does():
    """The training loop's validation reads the spec's blend_sigma_scale, so checkpoints are chosen on what inference does."""
    from sirtjax.segmentation import predict_array
    from sirtjax.segmentation.infer import foreground
    from sirtjax.segmentation.postprocess import liver_mask
    from sirtjax.train import Case
    from sirtjax.train.loop import validate

    image = np.random.default_rng(2).uniform(-0.5, 0.5, (30, 26, 22)).astype(np.float32)
    label = liver_mask(foreground(predict_array(TileMeanNet(), image, max_out_tile=(10, 10, 10), sigma_scale=0.4))).astype(np.uint8)
    case = Case("c", image, label, (3.0, 3.0, 3.0))
    spec = {"tile_out": [10, 10, 10]}
    assert validate(TileMeanNet(), [case], spec | {"blend_sigma_scale": 0.4})["c"] == pytest.approx(1.0)
    assert validate(TileMeanNet(), [case], spec)["c"] < 0.99


def test_canonical_grid_covers_field_of_view():
    direction = np.diag([-1.0, -1.0, 1.0])  # RAS-stored image
    vol = make_volume(np.zeros((10, 20, 30)), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), direction)
    ref = canonical_grid(vol, (3.0, 3.0, 3.0))
    assert np.allclose(ref.direction, np.eye(3))
    assert ref.size_xyz == (10, 14, 10)  # 30 mm, 40 mm, 30 mm -> ceil(extent / 3 mm)
    lo = np.asarray(ref.origin_mm) - 1.5
    # the field of view reaches half a voxel past the centres; y: 40 mm box, 42 mm grid centred on it
    assert np.allclose(lo, [-29.5, -40.0, -1.5])


def test_antialiasing_averages_fine_grids_before_down_sampling():
    """White noise on a 1 x 1 x 3 mm grid: a 2D Gaussian of sigma 1 voxel leaves 1 / (2 sqrt(pi)) of its
    standard deviation; trilinear resampling alone keeps about all of it. A coarser grid is untouched."""
    from sirtjax.segmentation import antialias, prepare_image

    rng = np.random.default_rng(0)
    noise = make_volume(rng.normal(0.0, 40.0, (30, 120, 120)).astype(np.float32), (1.0, 1.0, 3.0), (0, 0, 0), np.eye(3))
    smoothed = np.asarray(antialias(noise, (3.0, 3.0, 3.0)).array)
    assert smoothed.std() == pytest.approx(40.0 / (2 * np.sqrt(np.pi)), rel=0.05)
    windowed = np.asarray(prepare_image(noise, "ct", (3.0, 3.0, 3.0)).array)[2:-2, 2:-2, 2:-2]
    assert windowed.std() * 400 == pytest.approx(40.0 / (2 * np.sqrt(np.pi)), rel=0.1)  # the window maps 400 HU to 1
    coarse = make_volume(np.asarray(noise.array), (3.2, 3.2, 4.0), (0, 0, 0), np.eye(3))
    assert antialias(coarse, (3.0, 3.0, 3.0)) is coarse


def test_ct_is_interpolated_in_window_units():
    """Liver (60 HU) under lung (-800 HU) on 8 mm slices of a RAS-stored CT, prepared on the 3 mm grid: every voxel
    equals scipy's trilinear interpolation of the windowed input, so a point between a liver and a lung slice reads
    between their window values. The registration-segmentation network's path (`interpolate_hu`) interpolates in
    HU, where those points read as lung."""
    from sirtjax.segmentation import prepare_image
    from sirtjax.segmentation.preprocess import prepare_on
    from sirtjax.volume import index_to_world

    hu = np.where(np.arange(12)[:, None, None] < 6, 60.0, -800.0) * np.ones((12, 10, 9))
    vol = make_volume(hu.astype(np.float32), (3.0, 3.0, 8.0), (5.0, -7.0, 11.0), np.diag([-1.0, -1.0, 1.0]))
    prepared = prepare_image(vol, "ct", (3.0, 3.0, 3.0))
    world = np.concatenate([np.asarray(world_grid(prepared), np.float64).reshape(-1, 3), np.ones((prepared.array.size, 1))], axis=1)
    ijk = (world @ np.linalg.inv(index_to_world(vol)).T)[:, :3]
    inside = np.all((ijk > -1e-6) & (ijk < np.array(vol.size_xyz) - 1 + 1e-6), axis=1)
    windowed = (np.clip(hu, -200.0, 200.0) + 200.0) / 400.0 - 0.5
    expected = ndimage.map_coordinates(windowed, ijk[inside][:, ::-1].T, order=1)
    got = np.asarray(prepared.array).reshape(-1)[inside]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    between = (expected > -0.45) & (expected < 0.1)  # voxels that mix the two slices
    assert between.sum() >= 90
    in_hu = (np.clip(ndimage.map_coordinates(hu, ijk[inside][:, ::-1].T, order=1), -200.0, 200.0) + 200.0) / 400.0 - 0.5
    hu_path = np.asarray(prepare_on(vol, "ct", prepared, interpolate_hu=True).array).reshape(-1)[inside]
    np.testing.assert_allclose(hu_path, in_hu, atol=1e-5)
    assert np.all(in_hu[between] < expected[between] - 0.1)


def test_a_ct_to_denoise_is_denoised_in_hu():
    """A noisy CT (fat at -100 HU and liver at 60 HU, 70 HU of noise) is denoised unclipped: clipping first would cut
    the fat's lowest tail at -200 HU and raise its mean. Its input equals the HU path's, and differs from denoising
    the clipped image."""
    from sirtjax.segmentation import canonical_grid, prepare_image
    from sirtjax.segmentation.noise import denoise, measure_noise
    from sirtjax.segmentation.preprocess import prepare_on

    rng = np.random.default_rng(3)
    hu = np.where(np.arange(24)[None, None, :] < 12, -100.0, 60.0) + rng.normal(0.0, 70.0, (20, 22, 24))
    vol = make_volume(hu.astype(np.float32), (3.0, 3.0, 3.0), (1.0, 2.0, 3.0), np.diag([-1.0, -1.0, 1.0]))
    got = np.asarray(prepare_image(vol, "ct", (3.0, 3.0, 3.0), ct_noise_index_hu=20.0).array)
    in_hu = np.asarray(prepare_on(vol, "ct", canonical_grid(vol, (3.0, 3.0, 3.0)), ct_noise_index_hu=20.0, interpolate_hu=True).array)
    np.testing.assert_array_equal(got, in_hu)
    clipped = np.clip(hu, -200.0, 200.0)[:, ::-1, ::-1].astype(np.float32)
    clipped_first = denoise(clipped, np.full(3, 3.0), measure_noise(clipped, 20.0))
    fat = (np.clip(clipped_first, -200.0, 200.0) + 200.0) / 400.0 - 0.5
    # the flipped grid puts the fat at x >= 12; the clipped tail raises a Gaussian's mean by 2.5 HU (0.006 window units)
    assert fat[..., 12:].mean() > got[..., 12:].mean() + 0.004


def test_postprocessing_against_hand_cases():
    mask = np.zeros((8, 8, 8), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6, 6, 6] = True
    mask[5:8, 0:2, 0:2] = True  # 12 voxels
    assert largest_component(mask).sum() == 27 and largest_component(np.zeros((3, 3, 3))).sum() == 0
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    np.testing.assert_array_equal(fill_holes(shell), ndimage.binary_fill_holes(shell))
    assert fill_holes(shell).sum() == 125
    inst = instance_labels(mask.astype(float), min_voxels=2)
    assert inst.dtype == np.int32 and inst.max() == 2
    assert (inst == 1).sum() == 27 and (inst == 2).sum() == 12 and inst[6, 6, 6] == 0


@pytest.mark.parametrize("seed", range(6))
def test_postprocessing_in_the_mask_box_equals_scipy_on_the_whole_array(seed):
    """Random blobs with enclosed cavities, touching the array's faces or not, in a large empty margin, with specks
    around them and a notch opening onto the box's face: each step, which works inside the mask's bounding box,
    gives what scipy gives on the whole array."""
    from sirtjax.segmentation.postprocess import liver_warnings

    rng = np.random.default_rng(seed)
    mask = np.zeros((30, 34, 38), bool)
    lo = rng.integers(1, 6, 3) if seed % 2 else np.array([0, 0, 0])  # odd seeds keep a margin, even ones touch
    inner = ndimage.gaussian_filter(rng.normal(size=(18, 20, 22)), 1.5) > -0.1  # mostly solid, with cavities
    inner[6:10, 8:12, 8:12] = False
    inner |= rng.random(inner.shape) < 0.01  # specks within the blob's box
    inner[9, 9:11, 0:12] = False  # a notch from the box's face into the blob
    inner[:, :, 3] = False  # which is cut in two
    mask[lo[0]:lo[0] + 18, lo[1]:lo[1] + 20, lo[2]:lo[2] + 22] = inner
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    assert n > 1 and ndimage.binary_fill_holes(mask).sum() > mask.sum()
    np.testing.assert_array_equal(largest_component(mask), labels == np.argmax(sizes))
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    inst = instance_labels(mask.astype(np.float32), min_voxels=3)
    assert inst.max() == np.sum(sizes >= 3) and np.array_equal(inst > 0, np.isin(labels, np.flatnonzero(sizes >= 3)))
    warnings = liver_warnings(mask.astype(np.float32), 0.01)  # 0.01 ml a voxel: the largest component is implausible
    assert f"implausible liver volume {sizes.max() * 0.01:.0f} ml" in warnings[0]
    large = int(np.sum(sizes * 2.0 >= 50.0))  # 2 ml a voxel: components of at least 50 ml
    assert large > 1 and f"has {large} components" in liver_warnings(mask.astype(np.float32), 2.0)[-1]


def test_segment_cli_rejects_bad_modality(tmp_path, capsys):
    from sirtjax.cli import main
    from sirtjax.io import write_volume

    write_volume(make_volume(np.arange(64, dtype=np.int16).reshape(4, 4, 4)), tmp_path / "img.nii.gz")  # a body, not air
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(tmp_path / "img.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--modality", "pet"])
    assert exc.value.code == 2 and "--modality" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(tmp_path / "img.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--model", str(tmp_path)])
    assert exc.value.code == 2 and "model.json" in capsys.readouterr().err


@pytest.mark.parametrize("image, warned", [("stored", True), ("hu", False), ("mr", False)])
def test_segment_cli_warns_when_a_guessed_mr_fits_a_ct_without_its_intercept(image, warned, tmp_path, capsys, monkeypatch):
    """With no --modality, a body of 50 HU in air shifted by the rescale intercept (stored values) is read as MR, with a
    warning naming the file and the lost intercept. The HU image is read as CT, and an MR of a bright body (3000 in
    37) as MR, without it. The command is stopped where the model would load: the warning comes before."""
    import sirtjax.cli.segment as cli_segment
    from sirtjax.cli import main
    from sirtjax.errors import InputError
    from sirtjax.io import write_volume

    _, y, x = np.meshgrid(np.arange(12), np.linspace(-1, 1, 40), np.linspace(-1, 1, 40), indexing="ij")
    inside = np.hypot(x / 0.9, y / 0.7) <= 1.0
    array = {"stored": np.where(inside, 50.0 + 1024.0, 24.0), "hu": np.where(inside, 50.0, -1000.0),
             "mr": np.where(inside, 3000.0, 37.0)}[image].astype(np.float32)
    write_volume(make_volume(array, (2.0, 2.0, 3.0)), tmp_path / "img.nii.gz")

    def stop(*args, **kwargs):
        raise InputError("--model", "stopped by the test")

    monkeypatch.setattr(cli_segment, "_model", stop)
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(tmp_path / "img.nii.gz"), "-o", str(tmp_path / "m.nii.gz")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and f"modality: {'ct' if image == 'hu' else 'mr'} (guessed" in captured.out
    assert ("warning: img.nii.gz: read as MR; if it is a CT, it is not in Hounsfield units" in captured.err) == warned


def test_mask_to_liver_dilates_in_mm():
    """Voxels within 6 mm of the liver (anisotropic spacing, brute-force distances) are kept."""
    from sirtjax.segmentation import mask_to_liver

    image = make_volume(np.random.default_rng(0).uniform(-0.4, 0.4, (9, 11, 13)).astype(np.float32), (1.0, 2.0, 3.0))
    liver = np.zeros(image.shape, np.uint8)
    liver[4, 5, 6] = 1
    out = np.asarray(mask_to_liver(image, image.with_array(liver), dilation_mm=6.0).array)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")
    dist = np.sqrt(((zz - 4) * 3.0) ** 2 + ((yy - 5) * 2.0) ** 2 + ((xx - 6) * 1.0) ** 2)
    np.testing.assert_array_equal(out == np.asarray(image.array), dist <= 6.0)
    assert np.all(out[dist > 6.0] == -0.5)


def test_liver_warnings_flag_implausible_volumes_and_several_large_components():
    from sirtjax.segmentation.postprocess import liver_warnings

    prob = np.zeros((40, 40, 40), np.float32)
    prob[2:22, 2:22, 2:22] = 0.9  # 8000 voxels
    assert liver_warnings(prob, voxel_ml=0.2) == []  # 1600 ml, one component
    (small,) = liver_warnings(prob, voxel_ml=0.05)  # 400 ml
    assert "implausible liver volume 400 ml" in small
    prob[25:38, 25:38, 25:38] = 0.8  # a second component, 2197 voxels = 439 ml
    (several,) = liver_warnings(prob, voxel_ml=0.2)
    assert "2 components" in several and "1600 ml" in several
    assert "implausible liver volume 0 ml" in liver_warnings(np.zeros((4, 4, 4)), voxel_ml=1.0)[0]


def test_segment_cli_replaces_a_dicom_output_folder_only_with_overwrite(tmp_path, capsys, monkeypatch):
    """A mask written as a DICOM series (an output without a suffix) is a folder output: an existing one is refused
    without --overwrite and replaced whole with it (no file of the earlier series stays). Inference is replaced by a
    fixed mask so that the test checks the outputs alone."""
    import sirtjax.cli.segment as cli_segment
    from sirtjax.cli import main
    from sirtjax.io import read_volume, write_volume

    oblique = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    ct = make_volume(np.full((6, 8, 10), 40.0, np.float32) - 1100.0 * (np.arange(10) < 2), (1.5, 2.0, 3.0), (-40.0, 12.0, 7.0), oblique)
    write_volume(ct, tmp_path / "ct.nii.gz")
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[2:4, 3:6, 4:8] = 1
    monkeypatch.setattr(cli_segment, "_model", lambda *args, **kwargs: (None, {}))
    monkeypatch.setattr(cli_segment, "_liver", lambda net, spec, vol, *rest: (dataclasses.replace(vol, array=mask), None, []))
    out = tmp_path / "liver_dicom"
    out.mkdir()
    (out / "stale.dcm").write_bytes(b"an earlier run's file")
    run = ["segment", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--modality", "ct"]
    with pytest.raises(SystemExit) as exit_info:
        main(run)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["stale.dcm"]
    main(run + ["--overwrite"])
    assert "stale.dcm" not in {p.name for p in out.iterdir()}
    written = read_volume(out)
    np.testing.assert_array_equal(np.asarray(written.array), mask)
    for got, want in ((written.spacing_mm, ct.spacing_mm), (written.origin_mm, ct.origin_mm), (written.direction, ct.direction)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_modality_guess_and_mr_input_see_past_padding():
    """A T1-like MR converted with -32768 outside its field is guessed MR and prepared as the MR without padding (the
    padding lifted before resampling, which would blend it into the body's edge); CTs with air (noisy or constant
    -1000 HU) or soft tissue and fat under -3024 padding are guessed CT, stored values without the intercept MR."""
    from sirtjax.segmentation import prepare_image
    from sirtjax.segmentation.preprocess import guess_modality

    rng = np.random.default_rng(5)
    _, y, x = np.meshgrid(np.arange(16), np.linspace(-1, 1, 48), np.linspace(-1, 1, 48), indexing="ij")
    inside = np.hypot(x / 0.8, y / 0.6) <= 1.0
    mr = np.where(inside, 600.0 + 200.0 * (x > 0.2), 0.0) + np.abs(rng.normal(0.0, 10.0, inside.shape))
    circle = np.hypot(x, y) > 1.0
    padded = np.where(circle, -32768.0, mr)
    assert guess_modality(padded) == guess_modality(mr) == "mr"
    floor = float(mr[~circle].min())
    oblique = Rotation.from_euler("xz", (10, 25), degrees=True).as_matrix()
    prepared = [np.asarray(prepare_image(make_volume(a.astype(np.float32), (1.5, 1.5, 4.0), (3.0, -2.0, 1.0), oblique), "mr", (3.0, 3.0, 3.0)).array)
                for a in (padded, np.where(circle, floor, mr))]
    np.testing.assert_allclose(prepared[0], prepared[1], atol=1e-6)
    air = np.where(inside, 50.0, -1000.0)
    for ct in (air, air + rng.normal(0.0, 20.0, air.shape), np.where(circle, -3024.0, rng.normal(-40.0, 60.0, air.shape))):
        assert guess_modality(ct) == "ct"
    assert guess_modality(air + 1024.0) == "mr"

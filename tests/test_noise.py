"""Noise matching of CT network input: the noise index against known white noise, and the rule that leaves a CT at
the model's noise untouched and denoises a noisier one without blurring its edges."""

import numpy as np
import pytest
from scipy import ndimage

from sirtjax.models.store import spec_problem
from sirtjax.segmentation.noise import ENGAGE, denoise, measure_noise, noise_index_hu, tv_weight


def _tissue(shape=(24, 40, 48), edge_hu=(60.0, -100.0)) -> np.ndarray:
    """Soft tissue with a step along x (liver-like on the left, fat-like on the right)."""
    image = np.full(shape, edge_hu[0], np.float32)
    image[..., shape[2] // 2:] = edge_hu[1]
    return image


@pytest.mark.parametrize("sd_hu", [10.0, 25.0, 50.0, 75.0])
def test_noise_index_reads_white_noise_std(sd_hu):
    """On liver-like tissue, the white noise's std; where noise reaches the soft-tissue window (fat), it reads low."""
    noise = np.random.default_rng(0).normal(0.0, sd_hu, _tissue().shape).astype(np.float32)
    assert noise_index_hu(_tissue(edge_hu=(60.0, 60.0)) + noise) == pytest.approx(sd_hu, rel=0.03)
    assert noise_index_hu(_tissue() + noise) == pytest.approx(sd_hu, rel=0.03 if sd_hu < 30 else 0.15)


def test_noise_index_ignores_air_and_bone():
    rng = np.random.default_rng(1)
    image = _tissue() + rng.normal(0.0, 20.0, _tissue().shape).astype(np.float32)
    image[:, :8] = -1000.0 + rng.normal(0.0, 300.0, image[:, :8].shape)  # air, very noisy
    image[:, -4:] = 1200.0  # bone
    assert noise_index_hu(image) == pytest.approx(20.0, rel=0.05)


def test_noise_index_of_a_ct_clipped_to_the_window_is_its_own():
    """Enhanced tissue at 300 HU, clipped to the CT window's 200 HU, is flat there: told of the clip, the index does
    not read it as noiseless tissue (untold, it reads almost no noise)."""
    image = _tissue(edge_hu=(60.0, 300.0)) + np.random.default_rng(4).normal(0.0, 25.0, _tissue().shape).astype(np.float32)
    clipped = np.clip(image, -200.0, 200.0)
    assert noise_index_hu(clipped, clipped_at_hu=200.0) == pytest.approx(noise_index_hu(image), rel=0.02)
    assert noise_index_hu(clipped, clipped_at_hu=200.0) == pytest.approx(25.0, rel=0.05)
    assert noise_index_hu(clipped) < 0.2 * noise_index_hu(image)


def test_noise_index_of_a_clipped_ct_resampled_to_the_network_grid_is_its_own():
    """As the network's input is made: a 0.8 mm CT, half enhanced to 300 HU, clipped at 200 HU, anti-aliased and
    resampled to 3 mm. Its flat top lands near 200 HU, not on it, and still does not count."""
    from sirtjax.preprocess import resample_to
    from sirtjax.segmentation.preprocess import antialias_sigma_zyx, canonical_grid
    from sirtjax.volume import make_volume

    fine = _tissue((40, 120, 120), edge_hu=(60.0, 300.0)) + np.random.default_rng(5).normal(0.0, 25.0, (40, 120, 120))
    vol = make_volume(fine.astype(np.float32), (0.8, 0.8, 2.5))
    grid = canonical_grid(vol, (3.0, 3.0, 3.0))

    def on_grid(array):
        return np.asarray(resample_to(vol.with_array(array), grid, order=1, smooth_vox_zyx=antialias_sigma_zyx(vol, grid.spacing_mm)).array)

    clipped = on_grid(np.clip(fine, -200.0, 200.0).astype(np.float32))
    assert np.any(np.abs(clipped - 200.0) > 0) and np.sum(np.abs(clipped - 200.0) < 0.01) > 100  # near, not on, the clip
    assert noise_index_hu(clipped, clipped_at_hu=200.0) == pytest.approx(noise_index_hu(on_grid(fine.astype(np.float32))), rel=0.03)


def test_a_ct_at_the_models_noise_is_left_alone():
    image = _tissue() + np.random.default_rng(3).normal(0.0, 20.0, _tissue().shape).astype(np.float32)
    assert tv_weight(20.0 * ENGAGE, 20.0) is None
    match = measure_noise(image, 20.0)
    assert denoise(image, np.array([3.0, 2.0, 1.0]), match) is image  # any grid, untouched
    assert match.tv_weight is None and match.index == pytest.approx(20.0, rel=0.05)
    assert match.describe().endswith("not denoised")


def test_a_noisier_ct_is_denoised_below_the_models_noise_and_keeps_its_edge():
    rng = np.random.default_rng(4)
    clean = _tissue()
    noisy = clean + rng.normal(0.0, 50.0, clean.shape).astype(np.float32)
    match = measure_noise(noisy, 20.0)
    out = denoise(noisy, np.array([3.0, 3.0, 3.0]), match)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert match.tv_weight == pytest.approx(match.index) and "total variation" in match.describe()
    assert noise_index_hu(out) < 20.0
    assert np.mean(np.abs(out - clean)) < 0.25 * np.mean(np.abs(noisy - clean))
    # The step stays a step: across its two middle voxels, the profile (averaged over the other axes) falls by more
    # than half of the 160 HU step; scipy's Gaussian that leaves as little noise falls by about a third.
    gauss = ndimage.gaussian_filter(noisy, 1.3)
    assert noise_index_hu(gauss) >= noise_index_hu(out) - 0.5

    def jump_hu(image):
        profile = image[4:-4, 4:-4].mean(axis=(0, 1))
        return profile[clean.shape[2] // 2 - 1] - profile[clean.shape[2] // 2]

    assert jump_hu(out) > 0.55 * 160.0 > 1.5 * jump_hu(gauss)


def test_denoising_refuses_an_anisotropic_grid():
    """Total variation counts every voxel neighbour alike: an anisotropic network grid is refused, by denoise
    and already by the model check that `sirtjax segment` and `plan` run before anything else."""
    noisy = _tissue() + np.random.default_rng(5).normal(0.0, 50.0, _tissue().shape).astype(np.float32)
    with pytest.raises(ValueError, match="isotropic"):
        denoise(noisy, np.array([5.0, 3.0, 3.0]), measure_noise(noisy, 20.0))
    assert spec_problem({"ct_noise_index_hu": 20.0, "spacing_mm": [3.0, 3.0, 3.0]}, "liver", "ct") is None
    assert "isotropic" in spec_problem({"ct_noise_index_hu": 20.0, "spacing_mm": [3.0, 3.0, 5.0]}, "liver", "ct")
    assert spec_problem({"spacing_mm": [3.0, 3.0, 5.0]}, "liver", "ct") is None  # no noise matching: any grid


def _mr(shape=(24, 40, 48), sd=0.0, seed=6) -> np.ndarray:
    """An MR in arbitrary units: background 0, a bright tissue (800) beside a darker one (400), Gaussian noise `sd`."""
    image = np.zeros(shape, np.float32)
    image[:, 4:-4, 4:shape[2] // 2] = 800.0
    image[:, 4:-4, shape[2] // 2:-4] = 400.0
    return image + np.random.default_rng(seed).normal(0.0, sd, shape).astype(np.float32)


@pytest.mark.parametrize("sd", [0.01, 0.05, 0.1])
def test_window_noise_index_reads_white_noise_std_and_ignores_background_and_clip(sd):
    """In window units: tissue at 0 with white noise reads its std; the floor (-0.5) and the clipped top (0.5) do
    not count, noiseless as they are."""
    from sirtjax.segmentation.noise import noise_index_window

    rng = np.random.default_rng(7)
    windowed = np.full((24, 40, 48), -0.5, np.float32)
    windowed[:, 8:-8, 8:-8] = rng.normal(0.0, sd, (24, 24, 32))
    windowed[:, 8:-8, -14:-8] = 0.5  # clipped tissue
    assert noise_index_window(windowed) == pytest.approx(sd, rel=0.05)
    assert noise_index_window(np.full((8, 8, 8), -0.5, np.float32)) == 0.0  # nothing inside the window to measure


def test_a_noisy_mr_is_denoised_after_windowing_and_one_at_the_models_noise_is_not():
    """An MR whose noise in window units is twice the model's is denoised (total variation of weight its index,
    below the model's noise after); one at the model's noise is windowed alone, bit for bit; a CT is not MR-matched."""
    from sirtjax.segmentation import prepare_image
    from sirtjax.segmentation.noise import noise_index_window
    from sirtjax.volume import make_volume

    def prepared(image, modality="mr", **kw):
        found = []
        vol = make_volume(image, (3.0, 3.0, 3.0), (5.0, -2.0, 1.0), np.diag([1.0, -1.0, 1.0]))
        return np.asarray(prepare_image(vol, modality, (3.0, 3.0, 3.0), on_noise=found.append, **kw).array), found

    plain, found = prepared(_mr(sd=40.0))
    assert found == []
    index = noise_index_window(plain)
    matched, found = prepared(_mr(sd=40.0), mr_noise_index=index / 2.0)
    [match] = found
    assert match.unit == "window units" and match.index == pytest.approx(index) and match.tv_weight == pytest.approx(index)
    assert "MR noise index" in match.describe() and "denoised" in match.describe()
    assert noise_index_window(matched) < index / 2.0
    at_model, found = prepared(_mr(sd=40.0), mr_noise_index=index)
    assert found[0].tv_weight is None and found[0].describe().endswith("not denoised")
    np.testing.assert_array_equal(at_model, plain)
    ct = _mr(sd=40.0) - 1000.0
    np.testing.assert_array_equal(prepared(ct, "ct", mr_noise_index=1e-6)[0], prepared(ct, "ct")[0])
    assert "isotropic" in spec_problem({"mr_noise_index": 0.03, "spacing_mm": [3.0, 3.0, 5.0]}, "liver", "mr")

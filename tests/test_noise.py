"""Noise matching of CT network input: the noise index against known white noise, the bilateral filter against
ITK's, and the rule that leaves a CT at the model's noise untouched and smooths a noisier one without blurring
its edges."""

import numpy as np
import pytest
import SimpleITK as sitk

from sirtjax.segmentation.noise import ENGAGE, bilateral, filter_sigmas, match_noise, noise_index_hu


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


def test_bilateral_matches_itk_on_an_anisotropic_grid():
    """ITK's BilateralImageFilter with its neighbourhood (2.5 domain sigmas per axis, in mm)."""
    rng = np.random.default_rng(2)
    image = _tissue((16, 20, 24)) + rng.normal(0.0, 40.0, (16, 20, 24)).astype(np.float32)
    spacing_xyz = (2.0, 3.0, 4.0)
    domain_mm, range_hu = 4.0, 120.0
    itk = sitk.GetImageFromArray(image)
    itk.SetSpacing(spacing_xyz)
    expected = sitk.GetArrayFromImage(sitk.Bilateral(itk, domainSigma=domain_mm, rangeSigma=range_hu))
    radius = tuple(int(np.ceil(2.5 * domain_mm / s)) for s in spacing_xyz[::-1])
    got = np.asarray(bilateral(image, np.asarray(spacing_xyz[::-1], np.float32), domain_mm, range_hu, radius=radius))
    inner = (slice(radius[0], -radius[0]), slice(radius[1], -radius[1]), slice(radius[2], -radius[2]))  # borders differ
    assert np.mean(np.abs(got - expected)[inner]) < 0.5  # HU; ITK tabulates the intensity Gaussian
    assert np.max(np.abs(got - expected)[inner]) < 3.0
    assert np.std((got - _tissue((16, 20, 24)))[inner]) < 0.5 * 40.0


def test_a_ct_at_the_models_noise_is_left_alone():
    image = _tissue() + np.random.default_rng(3).normal(0.0, 20.0, _tissue().shape).astype(np.float32)
    assert filter_sigmas(20.0 * ENGAGE, 20.0) is None
    found = []
    assert match_noise(image, np.array([3.0, 3.0, 3.0]), 20.0, found.append) is image
    assert found[0].domain_sigma_mm is None and found[0].index_hu == pytest.approx(20.0, rel=0.05)
    assert found[0].describe().endswith("not filtered")


def test_a_noisier_ct_is_smoothed_to_the_models_noise_and_keeps_its_edge():
    rng = np.random.default_rng(4)
    clean = _tissue()
    noisy = clean + rng.normal(0.0, 50.0, clean.shape).astype(np.float32)
    found = []
    out = match_noise(noisy, np.array([3.0, 3.0, 3.0]), 20.0, found.append)
    assert found[0].domain_sigma_mm == pytest.approx(3.0 * (found[0].index_hu / 20.0 - 0.5)) and "smoothed" in found[0].describe()
    assert filter_sigmas(50.0, 20.0) == pytest.approx((2.0, 150.0), rel=0.02)
    assert noise_index_hu(out) < 20.0
    # The step stays a step: the profile across it, averaged over the other axes, goes from liver to fat within
    # two voxels either side, where a Gaussian of the same spatial sigma spreads it over five.
    profile = out[4:-4, 4:-4].mean(axis=(0, 1))
    mid = clean.shape[2] // 2
    assert profile[mid - 3] > 50.0 and profile[mid + 2] < -90.0

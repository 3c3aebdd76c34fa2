"""Noise matching for CT network input: a CT noisier than the CTs a model was trained on is denoised by total
variation (Chambolle's projection, scikit-image) before it is windowed.

A network trained on CTs of one noise level loses the liver on noisier ones (low-dose protocols on thin
reconstructions): it relies on the texture it learned. A model's spec may declare ``ct_noise_index_hu``, the
:func:`noise_index_hu` of the CTs it segments reliably. :func:`measure_noise` decides and :func:`denoise` acts:
a CT whose index is at most ENGAGE times that is left unchanged (bit for bit), a noisier one is denoised, more
strongly the noisier it is. Total
variation was chosen over a bilateral filter and non-local means on validation renderings (seeds 100-103), and its
strength rule (:func:`tv_weight_hu`) on seeds 100-109, never on the benchmark's; wavelet shrinkage, Bregman iterations,
anisotropic diffusion and median filters, tried since, lost to it (the liver model card). It is approximate: it brings the
noise down, it does not restore the texture the model knows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SOFT_TISSUE_HU = (-150.0, 250.0)  # voxels whose neighbour differences measure the noise
CLIP_MARGIN_HU = 1.0  # a clipped CT, resampled, holds its flat top at the clip +- float error: pairs this near it do not count
ENGAGE = 1.25  # denoise only a CT whose noise index exceeds the model's by more than this factor
TV_WEIGHT_PER_NOISE = 1.0  # the total-variation weight (HU) per HU of noise index
TV_ITERATIONS, TV_EPS = 1000, 1e-5  # stop at this relative energy change, or iterations; scikit-image's default (200, 2e-4) stops 1-2 HU short


def noise_index_hu(image_hu: np.ndarray, *, clipped_at_hu: float | None = None) -> float:
    """The CT's noise index (HU): a robust std (1.4826 MAD) of in-plane neighbour differences between soft-tissue
    voxels, over sqrt 2, i.e. the std of white noise. Spatially correlated noise reads lower (25 HU smoothed over
    0.7 voxels reads about 19), and so does noise that reaches the window's ends (50 HU on fat reads about 46).
    0 where fewer than 1000 soft-tissue pairs leave nothing to measure (such an image is not denoised).
    A CT clipped at `clipped_at_hu` (below SOFT_TISSUE_HU's top) is measured on the pairs below it by CLIP_MARGIN_HU:
    enhanced tissue clipped flat would read as noiseless and lower the index by 1-2 HU (contrast CT renderings)."""
    a = np.asarray(image_hu, np.float32)
    top = SOFT_TISSUE_HU[1] if clipped_at_hu is None else min(SOFT_TISSUE_HU[1], clipped_at_hu - CLIP_MARGIN_HU)
    diffs = []
    for axis in (1, 2):  # y and x: slices may be thick and interpolated along z
        lo, hi = np.delete(a, -1, axis=axis), np.delete(a, 0, axis=axis)
        soft = (lo > SOFT_TISSUE_HU[0]) & (lo < top) & (hi > SOFT_TISSUE_HU[0]) & (hi < top)
        diffs.append((hi - lo)[soft])
    d = np.concatenate(diffs)
    if d.size < 1000:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def tv_weight_hu(index_hu: float, model_index_hu: float) -> float | None:
    """The total-variation weight (HU, scikit-image's ``weight``) for a CT of noise index `index_hu`, or None where
    the index is within ENGAGE of the model's `model_index_hu`: the noise index itself (TV_WEIGHT_PER_NOISE)."""
    if index_hu <= ENGAGE * model_index_hu:
        return None
    return TV_WEIGHT_PER_NOISE * index_hu


@dataclasses.dataclass(frozen=True)
class NoiseMatch:
    """What :func:`measure_noise` found and :func:`denoise` does: the CT's noise index, the model's, and the TV
    weight (None: not denoised)."""

    index_hu: float
    model_index_hu: float
    tv_weight_hu: float | None

    def describe(self) -> str:
        """One line for the user: the noise, and whether and how the input was denoised."""
        head = f"CT noise index {self.index_hu:.0f} HU (model: {self.model_index_hu:.0f} HU)"
        if self.tv_weight_hu is None:
            return head + ": not denoised"
        return head + f": denoised before segmentation (total variation, weight {self.tv_weight_hu:.0f} HU)"


def measure_noise(image_hu: np.ndarray, model_index_hu: float, *, clipped_at_hu: float | None = None) -> NoiseMatch:
    """How to match `image_hu` (z, y, x, a CT on a network's grid, perhaps clipped at `clipped_at_hu`) to a model of
    noise index `model_index_hu`: its noise index and the total-variation weight (:func:`tv_weight_hu`; None: left
    unchanged)."""
    index_hu = noise_index_hu(image_hu, clipped_at_hu=clipped_at_hu)
    return NoiseMatch(index_hu, model_index_hu, tv_weight_hu(index_hu, model_index_hu))


def denoise(image_hu: np.ndarray, spacing_zyx_mm: np.ndarray, match: NoiseMatch) -> np.ndarray:
    """`image_hu` unchanged where `match` (its :func:`measure_noise`) has no weight, else denoised by total variation
    of that weight (float32). The regulariser counts every voxel neighbour alike, so the grid must be isotropic (a
    ValueError otherwise)."""
    if match.tv_weight_hu is None:
        return image_hu
    spacing = np.asarray(spacing_zyx_mm, np.float64)
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        raise ValueError(f"total-variation denoising needs an isotropic grid, got spacing {spacing.tolist()} mm")
    from skimage.restoration import denoise_tv_chambolle  # imported only for a noisy CT: 0.5 s

    image = np.asarray(image_hu, np.float32)
    return denoise_tv_chambolle(image, weight=match.tv_weight_hu, max_num_iter=TV_ITERATIONS, eps=TV_EPS).astype(np.float32)


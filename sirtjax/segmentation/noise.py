"""Noise matching for network input: a CT or MR noisier than the images a model was trained on is denoised by total
variation (Chambolle's projection, scikit-image), a CT in HU before it is windowed, an MR in window units after.

A network trained on CTs of one noise level loses the liver on noisier ones (low-dose protocols on thin
reconstructions): it relies on the texture it learned. A model's spec may declare ``ct_noise_index_hu``, the
:func:`noise_index_hu` of the CTs it segments reliably. :func:`measure_noise` decides and :func:`denoise` acts:
a CT whose index is at most ENGAGE times that is left unchanged (bit for bit), a noisier one is denoised, more
strongly the noisier it is. A spec's ``mr_noise_index`` does the same for MR (any contrast that is not CT) in the MR
window's units (:func:`noise_index_window`): an MR's intensities have no physical unit, and a remapped CT with a steep
map multiplies the CT's noise. Total
variation was chosen over a bilateral filter and non-local means on validation renderings (seeds 100-103), and its
strength rule (:func:`tv_weight`) on seeds 100-109, never on the benchmark's; wavelet shrinkage, Bregman iterations,
anisotropic diffusion and median filters, tried since, lost to it (the liver model card). It is approximate: it brings the
noise down, it does not restore the texture the model knows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SOFT_TISSUE_HU = (-150.0, 250.0)  # voxels whose neighbour differences measure a CT's noise
WINDOW_INSIDE = (-0.45, 0.45)  # window units (-0.5 to 0.5) of MR voxels whose neighbour differences measure its noise
CLIP_MARGIN_HU = 1.0  # a clipped CT, resampled, holds its flat top at the clip +- float error: pairs this near it do not count
ENGAGE = 1.25  # denoise only an image whose noise index exceeds the model's by more than this factor
TV_WEIGHT_PER_NOISE = 1.0  # the total-variation weight per unit of noise index (HU for a CT, window units for an MR)
TV_ITERATIONS, TV_EPS = 1000, 1e-5  # stop at this relative energy change, or iterations; scikit-image's default (200, 2e-4) stops 1-2 HU short


def _pair_noise(image: np.ndarray, low: float, high: float) -> float:
    """A robust std (1.4826 MAD) of in-plane neighbour differences between voxels strictly inside (low, high), over
    sqrt 2: the std of white noise. 0 where fewer than 1000 pairs leave nothing to measure."""
    a = np.asarray(image, np.float32)
    diffs = []
    for axis in (1, 2):  # y and x: slices may be thick and interpolated along z
        lo, hi = np.delete(a, -1, axis=axis), np.delete(a, 0, axis=axis)
        inside = (lo > low) & (lo < high) & (hi > low) & (hi < high)
        diffs.append((hi - lo)[inside])
    d = np.concatenate(diffs)
    if d.size < 1000:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def noise_index_hu(image_hu: np.ndarray, *, clipped_at_hu: float | None = None) -> float:
    """The CT's noise index (HU): :func:`_pair_noise` between soft-tissue voxels (SOFT_TISSUE_HU), the std of white
    noise. Spatially correlated noise reads lower (25 HU smoothed over 0.7 voxels reads about 19), and so does noise
    that reaches the window's ends (50 HU on fat reads about 46). 0 where there is too little soft tissue to measure
    (such an image is not denoised).
    A CT clipped at `clipped_at_hu` (below SOFT_TISSUE_HU's top) is measured on the pairs below it by CLIP_MARGIN_HU:
    enhanced tissue clipped flat would read as noiseless and lower the index by 1-2 HU (contrast CT renderings)."""
    top = SOFT_TISSUE_HU[1] if clipped_at_hu is None else min(SOFT_TISSUE_HU[1], clipped_at_hu - CLIP_MARGIN_HU)
    return _pair_noise(image_hu, SOFT_TISSUE_HU[0], top)


def noise_index_window(windowed: np.ndarray) -> float:
    """An MR's noise index in window units (the network input, -0.5 to 0.5): :func:`_pair_noise` between voxels
    inside WINDOW_INSIDE, which leaves out the background at the window's floor and the tissue clipped at its top.
    Approximate: one number for the whole body, where a remapped CT's noise varies with its map's slope per tissue."""
    return _pair_noise(windowed, *WINDOW_INSIDE)


def tv_weight(index: float, model_index: float) -> float | None:
    """The total-variation weight (scikit-image's ``weight``, in the index's units) for an image of noise index
    `index`, or None where it is within ENGAGE of the model's `model_index`: the noise index itself
    (TV_WEIGHT_PER_NOISE)."""
    if index <= ENGAGE * model_index:
        return None
    return TV_WEIGHT_PER_NOISE * index


@dataclasses.dataclass(frozen=True)
class NoiseMatch:
    """What :func:`measure_noise` found and :func:`denoise` does: the image's noise index, the model's, the TV weight
    (None: not denoised), all in `unit` ("HU" for a CT, "window units" for an MR)."""

    index: float
    model_index: float
    tv_weight: float | None
    unit: str = "HU"

    def describe(self) -> str:
        """One line for the user: the noise, and whether and how the input was denoised."""
        modality, digits = ("CT", 0) if self.unit == "HU" else ("MR", 3)
        head = f"{modality} noise index {self.index:.{digits}f} {self.unit} (model: {self.model_index:.{digits}f} {self.unit})"
        if self.tv_weight is None:
            return head + ": not denoised"
        return head + f": denoised before segmentation (total variation, weight {self.tv_weight:.{digits}f} {self.unit})"


def measure_noise(image_hu: np.ndarray, model_index_hu: float, *, clipped_at_hu: float | None = None) -> NoiseMatch:
    """How to match `image_hu` (z, y, x, a CT on a network's grid, perhaps clipped at `clipped_at_hu`) to a model of
    noise index `model_index_hu`: its noise index and the total-variation weight (:func:`tv_weight`; None: left
    unchanged)."""
    index_hu = noise_index_hu(image_hu, clipped_at_hu=clipped_at_hu)
    return NoiseMatch(index_hu, model_index_hu, tv_weight(index_hu, model_index_hu))


def measure_noise_window(windowed: np.ndarray, model_index: float) -> NoiseMatch:
    """How to match `windowed` (z, y, x, an MR on a network's grid in window units) to a model of window noise index
    `model_index`: as :func:`measure_noise`, with :func:`noise_index_window`."""
    index = noise_index_window(windowed)
    return NoiseMatch(index, model_index, tv_weight(index, model_index), "window units")


def denoise(image: np.ndarray, spacing_zyx_mm: np.ndarray, match: NoiseMatch) -> np.ndarray:
    """`image` unchanged where `match` (its :func:`measure_noise` or :func:`measure_noise_window`) has no weight, else
    denoised by total variation of that weight (float32). The regulariser counts every voxel neighbour alike, so the
    grid must be isotropic (a ValueError otherwise)."""
    if match.tv_weight is None:
        return image
    spacing = np.asarray(spacing_zyx_mm, np.float64)
    if not np.allclose(spacing, spacing[0], rtol=1e-3):
        raise ValueError(f"total-variation denoising needs an isotropic grid, got spacing {spacing.tolist()} mm")
    from skimage.restoration import denoise_tv_chambolle  # imported only for a noisy image: 0.5 s

    array = np.asarray(image, np.float32)
    return denoise_tv_chambolle(array, weight=match.tv_weight, max_num_iter=TV_ITERATIONS, eps=TV_EPS).astype(np.float32)

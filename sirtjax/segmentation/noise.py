"""Noise matching for CT network input: a CT noisier than the CTs a model was trained on is smoothed by an
edge-preserving (bilateral) filter before it is windowed.

A network trained on CTs of one noise level loses the liver on noisier ones (low-dose protocols on thin
reconstructions): it relies on the texture it learned. A model's spec may declare ``ct_noise_index_hu``, the
:func:`noise_index_hu` of the CTs it segments reliably. :func:`match_noise` leaves a CT whose index is at most
ENGAGE times that unchanged (bit for bit), and filters a noisier one, more strongly the noisier it is. The filter's
strength rule (:func:`filter_sigmas`) was chosen on validation renderings (seeds 100-101), never on the benchmark's.
It is approximate: it brings the noise down, it does not restore the texture the model knows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

SOFT_TISSUE_HU = (-150.0, 250.0)  # voxels whose neighbour differences measure the noise
ENGAGE = 1.25  # filter only a CT whose noise index exceeds the model's by more than this factor
RANGE_PER_NOISE = 3.0  # the filter's intensity sigma, in noise indices: edges of liver to fat (~150 HU) survive


def noise_index_hu(image_hu: np.ndarray) -> float:
    """The CT's noise index (HU): a robust std (1.4826 MAD) of in-plane neighbour differences between soft-tissue
    voxels, over sqrt 2, i.e. the std of white noise. Spatially correlated noise reads lower (25 HU smoothed over
    0.7 voxels reads about 19), and so does noise that reaches the window's ends (50 HU on fat reads about 46).
    0 where fewer than 1000 soft-tissue pairs leave nothing to measure (such an image is not filtered)."""
    a = np.asarray(image_hu, np.float32)
    diffs = []
    for axis in (1, 2):  # y and x: slices may be thick and interpolated along z
        lo, hi = np.delete(a, -1, axis=axis), np.delete(a, 0, axis=axis)
        soft = (lo > SOFT_TISSUE_HU[0]) & (lo < SOFT_TISSUE_HU[1]) & (hi > SOFT_TISSUE_HU[0]) & (hi < SOFT_TISSUE_HU[1])
        diffs.append((hi - lo)[soft])
    d = np.concatenate(diffs)
    if d.size < 1000:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


@partial(jax.jit, static_argnames=("radius",))
def bilateral(image: jax.Array, spacing_zyx_mm: jax.Array, domain_sigma_mm: float, range_sigma: float, radius: tuple[int, int, int]) -> jax.Array:
    """Bilateral filter (Tomasi and Manduchi 1998) of a (z, y, x) image: each voxel becomes the mean of its
    neighbours within `radius` voxels, weighted by a Gaussian of their distance (mm) and one of their intensity
    difference; the border is replicated. ITK's BilateralImageFilter with the same radius gives the same result
    (it tabulates the intensity Gaussian)."""
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij"), -1).reshape(-1, 3)
    padded = jnp.pad(image, [(r, r) for r in radius], mode="edge")

    def add(i, acc):
        num, den = acc
        offset = jnp.asarray(offsets)[i]
        neighbour = jax.lax.dynamic_slice(padded, offset + jnp.asarray(radius), image.shape)
        dist2 = jnp.sum((offset * spacing_zyx_mm) ** 2) / domain_sigma_mm**2
        w = jnp.exp(-0.5 * dist2 - 0.5 * ((neighbour - image) / range_sigma) ** 2)
        return num + w * neighbour, den + w

    num, den = jax.lax.fori_loop(0, len(offsets), add, (jnp.zeros_like(image), jnp.zeros_like(image)))
    return num / den


def filter_sigmas(index_hu: float, model_index_hu: float) -> tuple[float, float] | None:
    """(spatial sigma in voxels, intensity sigma in HU) of the filter for a CT of noise index `index_hu`, or None
    where the index is within ENGAGE of the model's `model_index_hu`: the spatial sigma is the noise ratio less
    half a voxel (1.25 voxels at 1.75 times the model's noise, 2 at 2.5), the intensity sigma three indices."""
    ratio = index_hu / model_index_hu
    if ratio <= ENGAGE:
        return None
    return ratio - 0.5, RANGE_PER_NOISE * index_hu


@dataclasses.dataclass(frozen=True)
class NoiseMatch:
    """What :func:`match_noise` found and did: the CT's noise index, the model's, and the filter (None: none)."""

    index_hu: float
    model_index_hu: float
    domain_sigma_mm: float | None
    range_sigma_hu: float | None

    def describe(self) -> str:
        """One line for the user: the noise, and whether and how the input was smoothed."""
        head = f"CT noise index {self.index_hu:.0f} HU (model: {self.model_index_hu:.0f} HU)"
        if self.domain_sigma_mm is None:
            return head + ": not filtered"
        return head + f": smoothed before segmentation (bilateral, {self.domain_sigma_mm:.1f} mm, {self.range_sigma_hu:.0f} HU)"


def match_noise(
    image_hu: np.ndarray, spacing_zyx_mm: np.ndarray, model_index_hu: float, on_match: Callable[[NoiseMatch], None] | None = None
) -> np.ndarray:
    """`image_hu` (z, y, x, a CT on a network's grid) unchanged if its noise index is within ENGAGE of the model's,
    else bilateral-filtered (:func:`filter_sigmas`; the neighbourhood is cut at 2 sigma). `on_match` receives what
    was found and done."""
    index_hu = noise_index_hu(image_hu)
    sigmas = filter_sigmas(index_hu, model_index_hu)
    if sigmas is None:
        result, match = image_hu, NoiseMatch(index_hu, model_index_hu, None, None)
    else:
        spacing = np.asarray(spacing_zyx_mm, np.float32)
        domain_mm, range_hu = sigmas[0] * float(spacing.min()), sigmas[1]
        radius = tuple(int(np.ceil(2.0 * domain_mm / s)) for s in spacing)
        result = np.asarray(bilateral(jnp.asarray(image_hu, jnp.float32), jnp.asarray(spacing), domain_mm, float(range_hu), radius=radius))
        match = NoiseMatch(index_hu, model_index_hu, domain_mm, range_hu)
    if on_match is not None:
        on_match(match)
    return result

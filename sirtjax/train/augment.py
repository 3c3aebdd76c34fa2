"""Random patch sampling with augmentation, all from explicit keys (jit- and vmap-able).

A patch is read from a whole prepared volume (z, y, x) through sampling coordinates, so rotation
and elastic deformation never leave empty corners: the patch centre, optional flips, a per-axis
scaling (log-uniform in `scale_range`), a rotation (uniform angles up to `max_rotation_deg` about
each axis) and a smooth elastic displacement (Gaussian control-point offsets of `elastic_mm` std
every `elastic_spacing_mm`, interpolated linearly) define where each patch voxel is read.
Coordinates are in voxel indices (z, y, x) of the source; rotations and displacements are applied
in mm, so they are physical on anisotropic grids and when the source has another spacing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from sirtjax.preprocess import window_mr_between
from sirtjax.registration.pyramid import gaussian_taps, kernel_radius, smooth_and_shrink


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; zeros disable a transform."""

    flip_prob: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per axis (z, y, x)
    max_rotation_deg: float = 10.0
    elastic_mm: float = 3.0
    elastic_spacing_mm: float = 30.0
    intensity_shift: float = 0.05  # std of an additive shift of the windowed image
    intensity_scale: float = 0.05  # std of a multiplicative change (1 + s)
    scale_range: tuple[float, float] = (1.0, 1.0)  # per-axis scaling of the anatomy, log-uniform
    noise_max: float = 0.0  # std of added noise (windowed units), drawn in [0, noise_max] per patch
    noise_blur_max_vox: float = 0.0  # the noise's correlation: a Gaussian blur of sigma in [0, this] voxels per patch
    remap_prob: float = 0.0  # probability that a patch's contrast is replaced by a random one (:func:`random_remap`)


def flip_axes(cfg: AugmentConfig) -> list[int]:
    """The spatial axes (z, y, x as 0-2) that training mirrors patches along: a trained model's ``flip_axes``."""
    return [axis for axis, p in enumerate(cfg.flip_prob) if p > 0]


def rotation_matrix(angles_rad: jax.Array) -> jax.Array:
    """3x3 rotation (z, y, x axes) composed from rotations about z, y and x by the given angles."""
    out = jnp.eye(3)
    for axis, a in enumerate(angles_rad):
        c, s = jnp.cos(a), jnp.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = jnp.eye(3).at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)
        out = r @ out
    return out


def patch_offsets_mm(patch_shape: Sequence[int], spacing_zyx_mm: Sequence[float]) -> jax.Array:
    """Offsets (3, *patch_shape) in mm of each patch voxel from the patch centre (z, y, x)."""
    return jnp.stack(jnp.meshgrid(*[(jnp.arange(n, dtype=jnp.float32) - (n - 1) / 2) * s for n, s in zip(patch_shape, spacing_zyx_mm)], indexing="ij"))


def patch_coordinates(
    key: jax.Array,
    centre_zyx: jax.Array,
    patch_shape: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    cfg: AugmentConfig,
    source_spacing_zyx_mm: Sequence[float] | None = None,
) -> jax.Array:
    """Sampling coordinates (3, *patch_shape) in voxel indices (z, y, x) of the source volume.

    The patch has spacing `spacing_zyx_mm`; the source has `source_spacing_zyx_mm` (default: the same).
    """
    k_rot, k_el, k_flip = jax.random.split(key, 3)
    flips = jax.random.bernoulli(k_flip, jnp.asarray(cfg.flip_prob, jnp.float32))
    rel_mm = patch_offsets_mm(patch_shape, spacing_zyx_mm) * jnp.where(flips, -1.0, 1.0)[:, None, None, None]
    if tuple(cfg.scale_range) != (1.0, 1.0):
        lo, hi = np.log(cfg.scale_range[0]), np.log(cfg.scale_range[1])
        rel_mm = rel_mm / jnp.exp(jax.random.uniform(jax.random.fold_in(key, 3), (3,), minval=lo, maxval=hi))[:, None, None, None]
    angles = jnp.deg2rad(cfg.max_rotation_deg) * jax.random.uniform(k_rot, (3,), minval=-1.0, maxval=1.0)
    rel_mm = jnp.einsum("ij,j...->i...", rotation_matrix(angles), rel_mm)
    if cfg.elastic_mm > 0:
        extent = [n * s for n, s in zip(patch_shape, spacing_zyx_mm)]
        ctrl = tuple(max(2, int(e // cfg.elastic_spacing_mm) + 2) for e in extent)
        coarse = cfg.elastic_mm * jax.random.normal(k_el, (3, *ctrl))
        rel_mm = rel_mm + jax.image.resize(coarse, (3, *patch_shape), method="linear")
    source = jnp.asarray(spacing_zyx_mm if source_spacing_zyx_mm is None else source_spacing_zyx_mm, jnp.float32)
    return rel_mm / source[:, None, None, None] + jnp.asarray(centre_zyx, jnp.float32)[:, None, None, None]


def patch_centre(k_fg: jax.Array, k_which: jax.Array, k_uni: jax.Array, foreground: jax.Array, shape: jax.Array, foreground_prob: float) -> jax.Array:
    """A patch centre (3,) float: one of the foreground voxels (K, 3) with probability foreground_prob
    (drawn with k_fg; which one with k_which), else a uniform position (k_uni) in a volume of `shape` (3,)."""
    fg = foreground[jax.random.randint(k_which, (), 0, foreground.shape[0])].astype(jnp.float32)
    uni = jax.random.uniform(k_uni, (3,)) * (shape.astype(jnp.float32) - 1)
    return jnp.where(jax.random.bernoulli(k_fg, foreground_prob), fg, uni)


def sample_patch(volume: jax.Array, coords: jax.Array, *, order: int, cval: float) -> jax.Array:
    """Read `volume` (z, y, x) at coords (3, ...): order 1 for images, 0 for labels; cval outside."""
    return map_coordinates(volume, list(coords), order=order, mode="constant", cval=cval)


def augment_intensity(key: jax.Array, patch: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """Random affine intensity change of a windowed patch, (1 + scale) * x + shift, then added noise; first, with
    probability ``remap_prob``, a random contrast (:func:`random_remap`).

    The noise imitates a lower dose (CT) or a lower signal (MR) than the rendering had. It is added
    only where the patch lies strictly inside the window (-0.5, 0.5), then clipped to it, so air
    and bone that the window clipped stay clipped as they would on a noisier scan. It is Gaussian, white or, with
    ``noise_blur_max_vox``, correlated as reconstructed CT noise is (:func:`correlated_noise`). Approximate: it
    lands after the rendering's own noise and blur.
    """
    if cfg.remap_prob > 0:
        k_use, k_map = jax.random.split(jax.random.fold_in(key, 3))
        patch = jnp.where(jax.random.bernoulli(k_use, cfg.remap_prob), random_remap(k_map, patch), patch)
    k1, k2 = jax.random.split(key)
    scale = 1.0 + cfg.intensity_scale * jax.random.normal(k1)
    out = patch * scale + cfg.intensity_shift * jax.random.normal(k2)
    if cfg.noise_max > 0:
        k_sd, k_noise, k_blur = jax.random.split(jax.random.fold_in(key, 2), 3)
        sd = cfg.noise_max * jax.random.uniform(k_sd)
        noise = correlated_noise(k_noise, patch.shape, cfg.noise_blur_max_vox * jax.random.uniform(k_blur),
                                 cfg.noise_blur_max_vox) if cfg.noise_blur_max_vox > 0 else jax.random.normal(k_noise, patch.shape)
        inside = (patch > -0.5) & (patch < 0.5)
        out = jnp.where(inside, jnp.clip(out + sd * noise, -0.5, 0.5), out)
    return out


REMAP_KNOTS = 12  # knots of the random map, evenly over the window: every 36 HU of a CT's [-200, 200] HU window


def random_remap(key: jax.Array, patch: jax.Array) -> jax.Array:
    """A windowed patch seen through a random contrast, the way an MR-like scan is made from a CT: a piecewise-linear
    map with REMAP_KNOTS knots of uniform random values in [0, 1] (the window floor, air, below 0.05, dark as in any
    MR), Rician noise of 0-5 % of the brightest value, then the MR window's rule
    (:func:`sirtjax.preprocess.window_mr_between`). Approximate: the window's bounds are the map's extreme values, not
    the image's, and what the CT window clipped stays one value. Steep stretches of the map amplify the rendering's
    own noise, as they do on a remapped real CT.
    """
    k_values, k_air, k_sd, k_noise = jax.random.split(key, 4)
    values = jax.random.uniform(k_values, (REMAP_KNOTS,)).at[0].set(0.05 * jax.random.uniform(k_air))
    out = jnp.interp(patch, jnp.linspace(-0.5, 0.5, REMAP_KNOTS), values)
    sd = 0.05 * jax.random.uniform(k_sd) * values.max()
    noise = sd * jax.random.normal(k_noise, (2, *patch.shape))
    return window_mr_between(jnp.hypot(out + noise[0], noise[1]), values.min(), values.max())


def correlated_noise(key: jax.Array, shape_zyx: tuple[int, int, int], sigma_vox, max_sigma_vox: float) -> jax.Array:
    """Unit-std Gaussian noise (z, y, x) correlated by a Gaussian blur of ``sigma_vox`` (traced, at most
    ``max_sigma_vox``): white noise blurred, then divided by the blur's analytic std (the product over the axes of
    the kernel's root sum of squares). Borders are replicated, so the outermost voxels correlate a little more."""
    sigma = jnp.maximum(sigma_vox, 0.05)  # a near-delta kernel: white noise
    radius = kernel_radius(max_sigma_vox)
    blurred = smooth_and_shrink(jax.random.normal(key, shape_zyx), (sigma,) * 3, 1, radius_zyx=(radius,) * 3)
    return blurred / jnp.sqrt(jnp.sum(gaussian_taps(sigma, radius) ** 2)) ** 3

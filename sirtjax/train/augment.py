"""Random patch sampling with augmentation, all from explicit keys (jit- and vmap-able).

A patch is read from a whole prepared volume (z, y, x) through sampling coordinates, so rotation
and elastic deformation never leave empty corners: the patch centre, a rotation (uniform angles up
to `max_rotation_deg` about each axis), a smooth elastic displacement (Gaussian control-point
offsets of `elastic_mm` std every `elastic_spacing_mm`, interpolated linearly) and optional flips
define where each patch voxel is read. Coordinates are in voxel indices (z, y, x); rotations and
displacements are applied in mm using `spacing_zyx_mm`, so they are physical on anisotropic grids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; zeros disable a transform."""

    flip_prob: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per axis (z, y, x)
    max_rotation_deg: float = 10.0
    elastic_mm: float = 3.0
    elastic_spacing_mm: float = 30.0
    intensity_shift: float = 0.05  # std of an additive shift of the windowed image
    intensity_scale: float = 0.05  # std of a multiplicative change (1 + s)


def rotation_matrix(angles_rad: jax.Array) -> jax.Array:
    """3x3 rotation (z, y, x axes) composed from rotations about z, y and x by the given angles."""
    out = jnp.eye(3)
    for axis, a in enumerate(angles_rad):
        c, s = jnp.cos(a), jnp.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = jnp.eye(3).at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)
        out = r @ out
    return out


def patch_coordinates(
    key: jax.Array,
    centre_zyx: jax.Array,
    patch_shape: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    cfg: AugmentConfig,
) -> jax.Array:
    """Sampling coordinates (3, *patch_shape) in voxel indices (z, y, x) of the source volume."""
    k_rot, k_el, k_flip = jax.random.split(key, 3)
    spacing = jnp.asarray(spacing_zyx_mm, jnp.float32)
    rel = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) - (n - 1) / 2 for n in patch_shape], indexing="ij"))
    flips = jax.random.bernoulli(k_flip, jnp.asarray(cfg.flip_prob, jnp.float32))
    rel = rel * jnp.where(flips, -1.0, 1.0)[:, None, None, None]
    rel_mm = rel * spacing[:, None, None, None]
    angles = jnp.deg2rad(cfg.max_rotation_deg) * jax.random.uniform(k_rot, (3,), minval=-1.0, maxval=1.0)
    rel_mm = jnp.einsum("ij,j...->i...", rotation_matrix(angles), rel_mm)
    if cfg.elastic_mm > 0:
        extent = [n * s for n, s in zip(patch_shape, spacing_zyx_mm)]
        ctrl = tuple(max(2, int(e // cfg.elastic_spacing_mm) + 2) for e in extent)
        coarse = cfg.elastic_mm * jax.random.normal(k_el, (3, *ctrl))
        rel_mm = rel_mm + jax.image.resize(coarse, (3, *patch_shape), method="linear")
    return rel_mm / spacing[:, None, None, None] + jnp.asarray(centre_zyx, jnp.float32)[:, None, None, None]


def sample_patch(volume: jax.Array, coords: jax.Array, *, order: int, cval: float) -> jax.Array:
    """Read `volume` (z, y, x) at coords (3, ...): order 1 for images, 0 for labels; cval outside."""
    return map_coordinates(volume, list(coords), order=order, mode="constant", cval=cval)


def augment_intensity(key: jax.Array, patch: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """Random affine intensity change of a windowed patch: (1 + scale) * x + shift."""
    k1, k2 = jax.random.split(key)
    scale = 1.0 + cfg.intensity_scale * jax.random.normal(k1)
    return patch * scale + cfg.intensity_shift * jax.random.normal(k2)

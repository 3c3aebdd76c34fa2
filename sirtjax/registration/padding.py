"""Grids padded at their high end to a bucket shape, so that patients with different grids share compiled steps.

A level's fixed box (:func:`~sirtjax.registration.problem.crop_level`) is padded to a
bucket shape (:func:`~sirtjax.buckets.bucket`, :func:`~sirtjax.buckets.coarse_bucket`). Its true extent ``valid_zyx`` (voxels per axis z, y, x)
travels with it as an array, and every computation on the padded arrays equals the one on the unpadded
arrays: samples are drawn among the valid voxels only (:func:`valid_flat_index`), a field's padding nodes
hold the values that clamping at the valid border gives (:func:`extend`), and the regularisers count the
valid springs and voxels only (:func:`valid_mask`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_mask(shape_zyx, valid_zyx: jax.Array) -> jax.Array:
    """(z, y, x) float32 map of a padded grid: 1 on the valid voxels (index < ``valid_zyx`` on every axis), 0 on the padding."""
    z, y, x = (jnp.arange(n) < valid_zyx[a] for a, n in enumerate(shape_zyx))
    return (z[:, None, None] & y[None, :, None] & x[None, None, :]).astype(jnp.float32)


def valid_count(valid_zyx: jax.Array) -> jax.Array:
    """Number of valid voxels (float32) of a padded grid."""
    return jnp.prod(jnp.asarray(valid_zyx, jnp.float32))


def extend(array, valid_zyx, *, linear: bool = False, xp=jnp):
    """A (z, y, x, ...) array with its padding past ``valid_zyx`` overwritten from the valid voxels.

    ``linear`` False: each padding voxel takes the nearest valid voxel's value (the border clamping of
    trilinear and B-spline interpolation). True: the linear extrapolation of the last two valid voxels, so
    central differences at the last valid voxel equal the one-sided ones. The valid voxels are unchanged.
    Differentiable; a select per axis, no gather over the array (its gradient would be a scatter).
    ``xp``: jax.numpy (traced) or numpy (host arrays).
    """
    for axis in range(3):
        n, last = array.shape[axis], valid_zyx[axis] - 1
        i = xp.arange(n).reshape((1,) * axis + (n,) + (1,) * (array.ndim - axis - 1))
        edge = xp.take(array, xp.reshape(last, (1,)), axis=axis)
        beyond = edge
        if linear:
            beyond = edge + (i - last) * (edge - xp.take(array, xp.reshape(xp.maximum(last - 1, 0), (1,)), axis=axis))
        array = xp.where(i <= last, array, beyond)
    return array


def nodes_valid(valid_zyx, factor: int):
    """Valid nodes (z, y, x) of a field with a node on every ``factor``-th voxel of a grid with ``valid_zyx`` valid
    voxels (integer arrays, numpy or jax)."""
    return (valid_zyx + factor - 1) // factor


def valid_flat_index(picks: jax.Array, valid_zyx: jax.Array, shape_zyx) -> jax.Array:
    """Flat indices (K,) into a padded (z, y, x) grid of flat indices (K,) into its valid block."""
    z, rest = jnp.divmod(picks, valid_zyx[1] * valid_zyx[2])
    y, x = jnp.divmod(rest, valid_zyx[2])
    return ((z * shape_zyx[1] + y) * shape_zyx[2] + x).astype(jnp.int32)

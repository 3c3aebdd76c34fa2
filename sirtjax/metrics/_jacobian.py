"""Jacobian determinant of a displacement field and its statistics, in JAX (jit-able).

A field is a Volume on the fixed grid with array (z, y, x, 3): components in mm along the
physical (world) x, y, z axes, mapping the fixed point p to p + u(p) (ITK convention). The
Jacobian is that of p -> p + u(p) with respect to world coordinates:

    J = I + (du/d index) · S⁻¹ · Dᵀ,

where the index derivatives are central differences (one-sided at the image edges, zero along an
axis of one voxel), S the spacing and D the direction. ITK's
DisplacementFieldJacobianDeterminantFilter uses spacing but not direction (and zero-flux edges),
so the two agree on identity-direction grids away from the edges.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sirtjax.volume import Volume


def _index_derivative(u: jax.Array, axis: int, last: jax.Array | None = None) -> jax.Array:
    """du/d(index) along an array axis: central inside, one-sided at the edges, 0 if one voxel.

    ``last``: the last valid index of the axis (traced) when the array is padded past it; the derivative there is
    then the one-sided (backward) difference, as at the edge of the unpadded array. Padding voxels are not valid.
    """
    n = u.shape[axis]
    if n == 1:
        return jnp.zeros_like(u)
    fwd = jnp.diff(u, axis=axis)
    first = jax.lax.slice_in_dim(fwd, 0, 1, axis=axis)
    last_fwd = jax.lax.slice_in_dim(fwd, n - 2, n - 1, axis=axis)
    central = 0.5 * (jax.lax.slice_in_dim(fwd, 1, n - 1, axis=axis) + jax.lax.slice_in_dim(fwd, 0, n - 2, axis=axis))
    d = jnp.concatenate([first, central, last_fwd], axis=axis)
    if last is None:
        return d
    backward = jnp.concatenate([first, fwd], axis=axis)  # u[i] - u[i - 1] (at i = 0: the forward one)
    i = jax.lax.broadcasted_iota(jnp.int32, u.shape, axis)
    return jnp.where(i == last, jnp.where(last > 0, backward, 0.0), d)


@jax.jit
def jacobian_determinant(field: Volume, valid_zyx: jax.Array | None = None) -> jax.Array:
    """det of the world Jacobian of p -> p + u(p) per voxel, float32 (z, y, x); see module doc.

    ``valid_zyx``: the field's true size (3,) (traced) when its array is padded past it: the determinants of the
    valid voxels are then those of the unpadded field (the padding's are meaningless).
    """
    u = jnp.asarray(field.array, jnp.float32)
    if u.ndim != 4 or u.shape[-1] != 3:
        raise ValueError(f"a displacement field has shape (z, y, x, 3), got {u.shape}")
    # Index axes (i, j, k) = (x, y, z) are array axes (2, 1, 0); g[c][a] = du_c / d index_a, each a (z, y, x) array,
    # combined by scalar products so that XLA fuses the whole determinant into one pass without a (z, y, x, 3, 3) tensor
    last = [None] * 3 if valid_zyx is None else [valid_zyx[axis] - 1 for axis in range(3)]
    g = [[_index_derivative(u[..., c], axis, last[axis]) for axis in (2, 1, 0)] for c in range(3)]
    index_per_mm = jnp.asarray(field.direction, jnp.float32).T / jnp.asarray(field.spacing_mm, jnp.float32)[:, None]
    # d index_a / d p_w = (S⁻¹ Dᵀ)[a, w]
    j = [[float(c == w) + sum(g[c][a] * index_per_mm[a, w] for a in range(3)) for w in range(3)] for c in range(3)]
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


class JacobianStats(NamedTuple):
    """Statistics of the Jacobian determinant over the evaluated voxels (float32 scalars)."""

    fraction_nonpositive: jax.Array  # fraction of voxels with det <= 0 (folding)
    mean: jax.Array
    std_log: jax.Array  # std of log(det) over the voxels with det > 0
    min: jax.Array
    max: jax.Array
    n_voxels: jax.Array  # voxels evaluated (int32)

    def to_dict(self) -> dict:
        """Python floats/ints, e.g. for a JSON report."""
        return {k: (int(v) if k == "n_voxels" else float(v)) for k, v in self._asdict().items()}


@jax.jit
def jacobian_stats(field: Volume, mask: jax.Array | None = None) -> JacobianStats:
    """Jacobian determinant statistics of a field (z, y, x, 3), optionally within a (z, y, x) mask.

    An empty mask gives n_voxels 0 and the identity map's values (fraction 0, mean/min/max 1,
    std_log 0); no positive determinant gives std_log 0. Never NaN; jit-able (mask may be traced).
    """
    return determinant_stats(jacobian_determinant(field), mask)


@jax.jit
def determinant_stats(det: jax.Array, mask: jax.Array | None = None) -> JacobianStats:
    """:func:`jacobian_stats` of determinants already computed (z, y, x), optionally within a (z, y, x) mask."""
    w = jnp.ones(det.shape, bool) if mask is None else jnp.asarray(mask) != 0
    n = jnp.sum(w, dtype=jnp.int32)
    nf = jnp.maximum(n, 1).astype(jnp.float32)
    positive = w & (det > 0)
    n_pos = jnp.maximum(jnp.sum(positive, dtype=jnp.int32), 1).astype(jnp.float32)
    log_det = jnp.where(positive, jnp.log(jnp.where(positive, det, 1.0)), 0.0)
    mean_log = jnp.sum(log_det) / n_pos
    var_log = jnp.sum(jnp.where(positive, (log_det - mean_log) ** 2, 0.0)) / n_pos
    empty = n == 0
    return JacobianStats(
        fraction_nonpositive=jnp.sum(w & (det <= 0)) / nf,
        mean=jnp.where(empty, 1.0, jnp.sum(jnp.where(w, det, 0.0)) / nf),
        std_log=jnp.sqrt(var_log),
        min=jnp.where(empty, 1.0, jnp.min(jnp.where(w, det, jnp.inf))),
        max=jnp.where(empty, 1.0, jnp.max(jnp.where(w, det, -jnp.inf))),
        n_voxels=n,
    )

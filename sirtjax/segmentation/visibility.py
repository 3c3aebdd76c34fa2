"""Which lesions an image shows: training labels only for lesions that can be seen.

A label on a lesion that the rendering does not show (5 HU from the liver under 25 HU of noise, a 5 mm
lesion averaged into an 8 mm slice) teaches a network to mark lesions where the image has no evidence
of one, and it then marks normal liver. Training therefore labels a lesion only when it passes the
Rose criterion (A. Rose, "The sensitivity performance of the human eye on an absolute scale", JOSA
1948): its contrast-to-noise ratio integrated over its voxels,

    |mean inside - mean of the liver ring around it| / (std of that ring) * sqrt(voxels inside) >= k,

with k = 5 in Rose's work. Everything is measured on the image as rendered, so slice thickness,
blur, bias, gamma and noise all count. Approximations: the noise is taken as independent between
voxels (correlated noise makes the criterion lenient), the ring is the liver (non-lesion) within
``ring_vox`` voxels of the lesion, where two lesions' rings meet the higher id takes the voxel, and a
lesion with fewer than MIN_RING_VOXELS liver voxels around it is kept (nothing to compare with).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROSE_K = 5.0  # Rose's threshold of the integrated contrast-to-noise ratio
MIN_RING_VOXELS = 8


def lesion_cnr(image: jax.Array, ids: jax.Array, background: jax.Array, n_ids: int, *, ring_vox: int = 3) -> tuple[jax.Array, jax.Array]:
    """(cnr, ring voxels), each (n_ids,): the integrated contrast-to-noise ratio of every lesion id of `ids`
    (int, 0 none) in `image` against the `background` (bool: liver, no lesion) voxels within ring_vox of it."""
    ids = ids.astype(jnp.int32)
    near = ids
    for axis in range(ids.ndim):  # the cube's max filter, one axis at a time (the same result, far fewer comparisons)
        window = tuple(2 * ring_vox + 1 if a == axis else 1 for a in range(ids.ndim))
        near = jax.lax.reduce_window(near, 0, jax.lax.max, window, (1,) * ids.ndim, "SAME")
    ring = background & (ids == 0)
    x = image.astype(jnp.float32)

    def total(values: jax.Array, where: jax.Array, segments: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(jnp.where(where, values, 0.0).ravel(), segments.ravel(), n_ids)

    one = jnp.ones_like(x)
    n_in, s_in = total(one, ids > 0, ids), total(x, ids > 0, ids)
    n_ring, s_ring, ss_ring = total(one, ring, near), total(x, ring, near), total(x * x, ring, near)
    mean_in = s_in / jnp.maximum(n_in, 1.0)
    mean_ring = s_ring / jnp.maximum(n_ring, 1.0)
    var_ring = jnp.maximum(ss_ring / jnp.maximum(n_ring, 1.0) - mean_ring**2, 1e-10)
    return jnp.abs(mean_in - mean_ring) / jnp.sqrt(var_ring) * jnp.sqrt(n_in), n_ring


def measured_cnr(cnr: jax.Array, n_ring: jax.Array) -> jax.Array:
    """The ratios of :func:`lesion_cnr`, nan at id 0 and where the ring has fewer than MIN_RING_VOXELS voxels."""
    return jnp.where(n_ring >= MIN_RING_VOXELS, cnr, jnp.nan).at[0].set(jnp.nan)


def shown_ids(cnr: jax.Array, min_cnr: float = ROSE_K) -> jax.Array:
    """(n_ids,) bool from :func:`measured_cnr`: the ids the image shows (ratio >= min_cnr, or not measurable), never 0."""
    return (jnp.isnan(cnr) | (cnr >= min_cnr)).at[0].set(False)


def visible_lesions(image: jax.Array, ids: jax.Array, background: jax.Array, n_ids: int, min_cnr: float = ROSE_K) -> jax.Array:
    """(n_ids,) bool: the lesion ids that `image` shows (see the module docstring); id 0 is never visible."""
    return shown_ids(measured_cnr(*lesion_cnr(image, ids, background, n_ids)), min_cnr)


def visible_label(image: jax.Array, ids: jax.Array, background: jax.Array, n_ids: int, min_cnr: float = ROSE_K) -> jax.Array:
    """A 0/1 float32 lesion label of the ids of `ids` that `image` shows."""
    return visible_lesions(image, ids, background, n_ids, min_cnr)[ids.astype(jnp.int32)].astype(jnp.float32)

"""Sum-of-squared-differences losses: images, binary masks and one-hot label maps.

All functions take values at N sample points of the fixed grid (flattened) and per-sample weights,
so they serve both the full-grid and the randomly sampled objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ssd(fixed_values: jax.Array, moving_values: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean squared difference of intensities (N,) (units: intensity^2); 0 when weights are all 0."""
    return jnp.sum(weights * (fixed_values - moving_values) ** 2) / jnp.maximum(jnp.sum(weights), 1e-12)


def overlap_ssd(fixed_channels: jax.Array, moving_channels: jax.Array, weights: jax.Array) -> jax.Array:
    """SSD of soft masks / one-hot label maps (N, C), normalised per class: the first class (the liver) plus the
    mean over the others (the landmarks).

    For each class c: ``sum_n w (f_c - m_c)^2 / sum_n w (f_c + m_c)``, which for binary maps is
    exactly ``1 - Dice`` (|A xor B| / (|A| + |B|)); the thesis' L_S is the un-normalised SSD, the
    normalisation makes the weight w_S independent of organ size and grid spacing. The liver keeps the
    say it has with a mask alone, and the landmarks together get as much again (averaged over all classes,
    a dozen landmarks left the liver a twelfth of it, and the field fitted the liver worse). Classes empty
    in both maps are left out; with no classes at all the loss is 0.
    """
    w = weights[:, None]
    num = jnp.sum(w * (fixed_channels - moving_channels) ** 2, axis=0)
    den = jnp.sum(w * (fixed_channels + moving_channels), axis=0)
    present = den > 1e-6
    per_class = jnp.where(present, num / jnp.where(present, den, 1.0), 0.0)
    others = jnp.sum(per_class[1:]) / jnp.maximum(jnp.sum(present[1:]), 1)
    return jnp.sum(per_class[:1]) + others

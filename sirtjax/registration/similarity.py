"""Image similarity: Mattes mutual information and sums of squared differences.

Mattes MI with B-spline Parzen windows (Mattes et al. 2003, ITK v4 variant).
Intensities are mapped to continuous bin coordinates exactly as ITK's
``MattesMutualInformationImageToImageMetricv4``: two padding bins at each end, bin size
``(max - min) / (bins - 4)``. Each sample adds a cubic B-spline window (4 bins) on the moving axis
and a zero-order (1 bin) or cubic (4 bins) window on the fixed axis to the joint histogram. The
histogram is built by scatter-adding those 4 or 16 contributions per sample, so memory is
O(samples + bins^2) and never a dense samples x bins matrix. The gradient flows through the moving
intensities (and, via them, through the transform).

The SSD losses (images, binary masks and one-hot label maps) take values at N sample points of the fixed grid
(flattened) and per-sample weights, so they serve both the full-grid and the randomly sampled objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_PADDING = 2


def cubic_bspline(x: jax.Array) -> jax.Array:
    """Centred cubic B-spline beta3(x) (support |x| < 2), elementwise."""
    a = jnp.abs(x)
    inner = 2.0 / 3.0 - a**2 + 0.5 * a**3
    outer = (2.0 - a) ** 3 / 6.0
    return jnp.where(a < 1.0, inner, jnp.where(a < 2.0, outer, 0.0))


def bin_coordinates(values: jax.Array, value_range: tuple[jax.Array, jax.Array], bins: int) -> jax.Array:
    """Continuous Parzen bin coordinate of each value (ITK: padding 2 bins each side), same shape."""
    lo, hi = value_range
    size = jnp.maximum(hi - lo, 1e-6) / (bins - 2 * _PADDING)
    return (jnp.clip(values, lo, hi) - lo) / size + _PADDING


def _window(coord: jax.Array, bins: int, order: int) -> tuple[jax.Array, jax.Array]:
    """Bin indices (N, K) and weights (N, K) of each sample's Parzen window (K = 1 or 4)."""
    base = jnp.clip(jnp.floor(coord), _PADDING, bins - _PADDING - 1)
    if order == 0:
        return base.astype(jnp.int32)[:, None], jnp.ones_like(coord)[:, None]
    idx = base[:, None] + jnp.arange(-1.0, 3.0)[None, :]
    return idx.astype(jnp.int32), cubic_bspline(idx - coord[:, None])


def joint_histogram(
    fixed_values: jax.Array,
    moving_values: jax.Array,
    weights: jax.Array,
    *,
    fixed_range: tuple[jax.Array, jax.Array],
    moving_range: tuple[jax.Array, jax.Array],
    bins: int = 32,
    fixed_order: int = 0,
) -> jax.Array:
    """Normalised Parzen joint histogram (bins_fixed, bins_moving) of weighted samples (N,).

    Samples with weight 0 (outside masks or the moving image) do not count. An all-zero weight
    vector gives an all-zero histogram.
    """
    fi, fw = _window(bin_coordinates(fixed_values, fixed_range, bins), bins, fixed_order)
    mi_, mw = _window(bin_coordinates(moving_values, moving_range, bins), bins, 3)
    flat = (fi[:, :, None] * bins + mi_[:, None, :]).reshape(-1)
    vals = (weights[:, None, None] * fw[:, :, None] * mw[:, None, :]).reshape(-1)
    hist = jnp.zeros(bins * bins, jnp.float32).at[flat].add(vals).reshape(bins, bins)
    return hist / jnp.maximum(jnp.sum(hist), 1e-12)


def mutual_information(joint: jax.Array) -> jax.Array:
    """Mutual information (nats, >= 0) of a normalised joint histogram (bins_fixed, bins_moving)."""
    pf = jnp.sum(joint, axis=1, keepdims=True)
    pm = jnp.sum(joint, axis=0, keepdims=True)
    ok = joint > 1e-16
    ratio = jnp.where(ok, joint, 1.0) / jnp.maximum(pf * pm, 1e-16)
    return jnp.sum(jnp.where(ok, joint * jnp.log(ratio), 0.0))


def mattes_mi(
    fixed_values: jax.Array,
    moving_values: jax.Array,
    weights: jax.Array,
    *,
    fixed_range: tuple[jax.Array, jax.Array],
    moving_range: tuple[jax.Array, jax.Array],
    bins: int = 32,
    fixed_order: int = 0,
) -> jax.Array:
    """Mattes MI (nats) of weighted intensity samples (N,); ITK's metric value is its negative.

    Args:
      fixed_values, moving_values: intensities at the same N sample points.
      weights: (N,) sample weights, 0 for samples outside masks or the moving image.
      fixed_range, moving_range: (min, max) intensities defining the bins (as ITK: the image range).
      bins: histogram bins per axis (32 by default, as ITK and the thesis' tools).
      fixed_order: Parzen window on the fixed axis, 0 (box, ITK's choice) or 3 (cubic).
    """
    joint = joint_histogram(
        fixed_values, moving_values, weights, fixed_range=fixed_range, moving_range=moving_range,
        bins=bins, fixed_order=fixed_order,
    )
    return mutual_information(joint)


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

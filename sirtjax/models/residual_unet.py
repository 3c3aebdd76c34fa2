"""Generic residual U-Net3D of paper 003 (MONAI-style): same-size output for patch-based work.

Encoder: residual units of two 3x3x3 convolutions, the first strided by 2 to down-sample, with
instance normalisation and leaky ReLU; decoder: 3x3x3 transposed convolution (stride 2) up, concat
with the skip, one residual unit; dropout (rate 0.1 in the paper) on the two deepest levels when a
dropout key is given. Tensors are NDHWC float32; spatial sizes must be divisible by 2**(levels-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class ResidualUnit(nnx.Module):
    """Two 3x3x3 convolutions (first with `stride`) + instance norm + leaky ReLU, residual path."""

    def __init__(self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_features, out_features, (3, 3, 3), strides=stride, rngs=rngs)
        self.norm1 = nnx.InstanceNorm(out_features, rngs=rngs)
        self.conv2 = nnx.Conv(out_features, out_features, (3, 3, 3), rngs=rngs)
        self.norm2 = nnx.InstanceNorm(out_features, rngs=rngs)
        needs_proj = stride != 1 or in_features != out_features
        self.skip = nnx.Conv(in_features, out_features, (3, 3, 3) if stride != 1 else (1, 1, 1), strides=stride, rngs=rngs) if needs_proj else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the unit to an NDHWC tensor."""
        h = jax.nn.leaky_relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        skip = x if self.skip is None else self.skip(x)
        return jax.nn.leaky_relu(h + skip)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with an explicit key; identity when key is None (inference)."""
    if key is None or rate <= 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class ResidualUNet3D(nnx.Module):
    """Residual U-Net3D (paper 003): logits (N, z, y, x, out) for inputs (N, z, y, x, in)."""

    def __init__(
        self,
        in_features: int = 1,
        out_features: int = 1,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        *,
        dropout_rate: float = 0.1,
        rngs: nnx.Rngs,
    ):
        features = tuple(int(f) for f in features)
        self.levels = len(features)
        self.dropout_rate = float(dropout_rate)
        self.down = nnx.List(
            [ResidualUnit(in_features if i == 0 else features[i - 1], f, 1 if i == 0 else 2, rngs=rngs) for i, f in enumerate(features)]
        )
        self.upconv = nnx.List(
            [nnx.ConvTranspose(features[i + 1], features[i], (3, 3, 3), strides=2, rngs=rngs) for i in reversed(range(self.levels - 1))]
        )
        self.up = nnx.List([ResidualUnit(2 * features[i], features[i], 1, rngs=rngs) for i in reversed(range(self.levels - 1))])
        self.head = nnx.Conv(features[0], out_features, (1, 1, 1), rngs=rngs)

    def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """Logits of the same spatial size as x; dropout only when `dropout_key` is given."""
        step = 2 ** (self.levels - 1)
        if any(n % step for n in x.shape[1:4]):
            raise ValueError(f"spatial size {tuple(x.shape[1:4])} must be divisible by {step}")
        keys = list(jax.random.split(dropout_key, self.levels)) if dropout_key is not None else [None] * self.levels
        skips = []
        for i, unit in enumerate(self.down):
            x = unit(x)
            if i >= self.levels - 2:  # the two deepest levels
                x = _dropout(x, self.dropout_rate, keys[i])
            skips.append(x)
        for upconv, unit, skip in zip(self.upconv, self.up, reversed(skips[:-1])):
            x = unit(jnp.concatenate([upconv(x), skip], axis=-1))
        return self.head(x)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Output (z, y, x) equals a valid input (z, y, x); raises ValueError if not divisible."""
        step = 2 ** (self.levels - 1)
        if any(int(n) % step for n in input_shape):
            raise ValueError(f"input shape {tuple(input_shape)} must be divisible by {step}")
        return tuple(int(n) for n in input_shape)  # type: ignore[return-value]

    def input_shape_for(self, min_output: Sequence[int]) -> tuple[int, int, int]:
        """Smallest divisible input (z, y, x) at least `min_output`."""
        step = 2 ** (self.levels - 1)
        return tuple(-(-int(n) // step) * step for n in min_output)  # type: ignore[return-value]

    def margin(self) -> tuple[int, int, int]:
        """Same-size output: no margin (zero padding at tile borders instead)."""
        return (0, 0, 0)

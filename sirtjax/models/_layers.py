"""Building blocks shared by the U-Nets: convolution stages, cropping, pooling and up-sampling.

All tensors are NDHWC float32: (batch, z, y, x, channels). Kernel sizes and factors are given in
(z, y, x) order like the array axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Triple = tuple[int, int, int]


def as_triple(value: int | Sequence[int]) -> Triple:
    """An int or a 3-sequence as a (z, y, x) triple of ints."""
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"expected an int or 3 values (z, y, x), got {value!r}")
    return out  # type: ignore[return-value]


def center_crop(x: jax.Array, spatial: Sequence[int]) -> jax.Array:
    """Crop the spatial axes (1..3) of an NDHWC tensor symmetrically to `spatial` (z, y, x).

    The differences must be even (the U-Net geometry guarantees it); raises ValueError otherwise.
    """
    starts = []
    for have, want in zip(x.shape[1:4], spatial):
        diff = have - want
        if diff < 0 or diff % 2:
            raise ValueError(f"cannot centre-crop {tuple(x.shape[1:4])} to {tuple(spatial)}")
        starts.append(diff // 2)
    return x[:, starts[0] : starts[0] + spatial[0], starts[1] : starts[1] + spatial[1], starts[2] : starts[2] + spatial[2]]


def repeat_upsample(x: jax.Array, factor: Triple) -> jax.Array:
    """Up-sample NDHWC by repeating each voxel `factor` (z, y, x) times (thesis 4.3.2)."""
    for axis, f in zip((1, 2, 3), factor):
        if f > 1:
            x = jnp.repeat(x, f, axis=axis)
    return x


def max_pool(x: jax.Array, factor: Triple) -> jax.Array:
    """Non-overlapping max pooling of NDHWC by `factor` (z, y, x); sizes must be divisible."""
    for n, f in zip(x.shape[1:4], factor):
        if n % f:
            raise ValueError(f"spatial size {tuple(x.shape[1:4])} not divisible by pooling factor {factor}")
    return nnx.max_pool(x, window_shape=factor, strides=factor, padding="VALID")


def tap_conv(inputs: jax.Array, kernel: jax.Array, window_strides, padding, **kwargs) -> jax.Array:
    """3D convolution NDHWC x DHWIO as one matmul of (y, x)-tap columns, summed over shifted z-taps.

    The (y, x) taps are concatenated once over the whole depth, multiplied by the kernel laid out
    as (ky*kx*C, kz*O), and the kz output groups are added with their z shifts. Same result as
    ``lax.conv_general_dilated`` for stride 1, no dilation, one feature group and "VALID"/"SAME"
    (or explicit) padding; XLA's CPU conv3d is 3-10x slower, forward and backward, for the few
    channels of these U-Nets. Drop-in for ``nnx.Conv(conv_general_dilated=...)``.
    """
    del kwargs  # dimension numbers are fixed (NDHWC, DHWIO); precision/sharding use the defaults
    if any(s != 1 for s in window_strides):
        raise ValueError("tap_conv supports stride 1 only")
    kz, ky, kx, c, o = kernel.shape
    if padding == "SAME":
        padding = [((k - 1) // 2, k // 2) for k in (kz, ky, kx)]
    if padding != "VALID":
        inputs = jnp.pad(inputs, [(0, 0), *padding, (0, 0)])
    d, h, w = inputs.shape[1:4]
    od, oh, ow = d - kz + 1, h - ky + 1, w - kx + 1
    cols = jnp.concatenate([inputs[:, :, dy : dy + oh, dx : dx + ow, :] for dy in range(ky) for dx in range(kx)], axis=-1)
    per_z = cols @ jnp.moveaxis(kernel, 0, 3).reshape(ky * kx * c, kz * o)  # (n, d, oh, ow, kz*o)
    return sum(per_z[:, dz : dz + od, ..., dz * o : (dz + 1) * o] for dz in range(kz))


class ConvStage(nnx.Module):
    """A sequence of 3D convolutions with leaky ReLU (no dead units in a deep unnormalised stack), optionally residual.

    Each conv has its own kernel (z, y, x) and padding ("VALID" shrinks by kernel - 1, "SAME" keeps
    the size). With ``residual=True`` the stage input, centre-cropped to the output size (and
    projected by a 1x1x1 convolution when the channel count changes), is added before the last
    activation (thesis 7.3.2.1: one residual connection every two convolutional layers).
    The convolutions are computed with :func:`tap_conv` (faster than XLA's conv3d on CPU). With
    ``norm="instance"`` every convolution is followed by instance normalisation (a group norm with
    one channel per group, learnable scale and bias), which the thesis does not use but which makes
    a small network train in far fewer steps; predictions then depend on the tile's content, so
    such models should be run on tiles of their training patch size (the spec's ``tile_out``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernels: Sequence[Triple],
        paddings: Sequence[str],
        *,
        residual: bool = False,
        norm: str | None = None,
        rngs: nnx.Rngs,
    ):
        if len(kernels) != len(paddings) or not kernels:
            raise ValueError("a stage needs one padding per kernel and at least one conv")
        self.convs = nnx.List(
            [
                nnx.Conv(
                    in_features if i == 0 else out_features,
                    out_features,
                    kernel_size=k,
                    padding=p,
                    conv_general_dilated=tap_conv,
                    kernel_init=nnx.initializers.he_normal(),  # keeps activations O(1) through the ReLU stack
                    rngs=rngs,
                )
                for i, (k, p) in enumerate(zip(kernels, paddings))
            ]
        )
        if norm not in (None, "instance"):
            raise ValueError(f"unknown norm {norm!r}; expected None or 'instance'")
        self.norms = nnx.List(
            [nnx.GroupNorm(out_features, num_groups=out_features, rngs=rngs) for _ in kernels] if norm else []
        )
        self.residual = residual
        self.project = (
            nnx.Conv(in_features, out_features, kernel_size=(1, 1, 1), rngs=rngs)
            if residual and in_features != out_features
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the stage to an NDHWC tensor."""
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.norms:
                h = self.norms[i](h)
            if i < len(self.convs) - 1 or not self.residual:
                h = jax.nn.leaky_relu(h)
        if self.residual:
            skip = center_crop(x, h.shape[1:4])
            if self.project is not None:
                skip = self.project(skip)
            h = jax.nn.leaky_relu(h + skip)
        return h

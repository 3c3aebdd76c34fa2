"""DeepMedic with three pathways, as thesis 3.3.2 modified it for the liver (seed 002, Fig. 3.1).

Kamnitsas et al.'s DeepMedic segments a block of voxels from parallel pathways of valid 3x3x3
convolutions at several resolutions. The thesis adds a third pathway for the whole abdomen:
down-sampling factors 1, 5 and 15, ten convolutions per pathway, the low-resolution outputs
up-sampled by 5 and 15, concatenated with the normal pathway's, and fused by two 1x1x1
("fully connected") layers before a 1x1x1 classification layer.

Here the network takes one tile at full resolution, like the U-Nets, so that it trains with the same
patch sampler and synthetic generator and runs through the same sliding window:

- the output is the centre of the tile, ``context`` voxels in from each side;
- the normal pathway convolves the output block plus its ten-voxel margin with valid convolutions;
- the pathway of factor f convolves the whole tile block-averaged by f with zero-padded ("SAME")
  convolutions, and its output is repeated f times along each axis and centre-cropped to the output.

Two choices are ours and approximate the original. The low-resolution context reaches only as far
as the tile, not the whole down-sampled image; at 3 mm a tile of 45 + 2 x 30 voxels spans 315 mm,
most of an abdomen. Down-sampling is a block mean, where DeepMedic takes every f-th voxel. A tile
must be a multiple of every factor, and the predictions depend on where the tile lies, so the model
runs on tiles of its training size (the spec's ``tile_out``) like the instance-normalised U-Net.

Tensors are NDHWC float32; shapes are (z, y, x). The model returns logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sirtjax.models._layers import ConvStage, center_crop, repeat_upsample

_K = (3, 3, 3)


def block_mean(x: jax.Array, factor: int) -> jax.Array:
    """Mean over non-overlapping factor^3 blocks of an NDHWC tensor whose sizes factor divides."""
    n, d, h, w, c = x.shape
    return x.reshape(n, d // factor, factor, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4, 6))


def _pathway(in_features: int, widths: Sequence[int], padding: str, norm: str | None, rngs: nnx.Rngs) -> nnx.List:
    """Two 3x3x3 convolutions per width: len(widths) stages, 2 * len(widths) convolutions."""
    chans = (in_features, *widths)
    return nnx.List([ConvStage(chans[i], chans[i + 1], (_K, _K), (padding, padding), norm=norm, rngs=rngs) for i in range(len(widths))])


class DeepMedic(nnx.Module):
    """Three-pathway DeepMedic on one full-resolution tile (see the module docstring for the geometry)."""

    def __init__(
        self,
        in_features: int = 1,
        out_features: int = 1,
        features: Sequence[int] = (8, 8, 16, 16, 24),
        *,
        factors: Sequence[int] = (5, 15),
        context: int = 30,
        fusion_features: int = 48,
        norm: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.factors = tuple(int(f) for f in factors)
        self.n_convs = 2 * len(features)
        if context < self.n_convs:
            raise ValueError(f"context {context} is smaller than the normal pathway's margin {self.n_convs}")
        self.context = int(context)
        self.multiple = math.lcm(*self.factors)  # 1 without low pathways
        self.normal = _pathway(in_features, features, "VALID", norm, rngs)
        self.low = nnx.List([_pathway(in_features, features, "SAME", norm, rngs) for _ in self.factors])
        width = features[-1] * (1 + len(self.factors))
        self.fuse = nnx.List(
            [nnx.Conv(n_in, fusion_features, kernel_size=(1, 1, 1), rngs=rngs) for n_in in (width, fusion_features)]
        )
        self.head = nnx.Conv(fusion_features, out_features, kernel_size=(1, 1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, z', y', x', out) for an input tile (N, z, y, x, in) of a valid shape."""
        out = self.output_shape(x.shape[1:4])
        h = center_crop(x, tuple(o + 2 * self.n_convs for o in out))
        for stage in self.normal:
            h = stage(h)
        features = [h]
        for factor, pathway in zip(self.factors, self.low):
            g = block_mean(x, factor)
            for stage in pathway:
                g = stage(g)
            features.append(center_crop(repeat_upsample(g, (factor,) * 3), out))
        h = jnp.concatenate(features, axis=-1)
        for layer in self.fuse:
            h = jax.nn.leaky_relu(layer(h))
        return self.head(h)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Output (z, y, x) for an input tile (z, y, x); raises ValueError if the tile is not valid."""
        out = tuple(int(n) - 2 * self.context for n in input_shape)
        if any(int(n) % self.multiple for n in input_shape) or min(out) < 1:
            raise ValueError(
                f"input tile {tuple(input_shape)} is not valid for this DeepMedic: sizes must be multiples of "
                f"{self.multiple} and exceed {2 * self.context} (try input_shape_for)"
            )
        return out  # type: ignore[return-value]

    def input_shape_for(self, min_output: Sequence[int]) -> tuple[int, int, int]:
        """Smallest valid input tile (z, y, x) whose output is at least `min_output` (z, y, x)."""
        m = self.multiple
        return tuple(-(-(max(int(o), 1) + 2 * self.context) // m) * m for o in min_output)  # type: ignore[return-value]

    def margin(self) -> tuple[int, int, int]:
        """Voxels lost on each side (z, y, x) between an input tile and its output."""
        return (self.context,) * 3

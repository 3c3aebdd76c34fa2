"""U-Nets with valid (unpadded) convolutions: the thesis liver U-Net and the lesion U-Net.

Thesis 4.3.2 (liver, 3 mm): four resolution levels, down- and up-sampling by 3, 3x3x3 kernels,
up-sampling by repetition, three skip connections, input 189x162x162 -> output 163x136x136. The
thesis gives no per-layer padding; with exact factor-3 pooling the only arrangement of valid 3x3x3
convolutions that yields a 13-voxel margin per side (13 = 1 + 3 + 9) is one valid convolution per
decoder level, so here every stage has two convolutions, zero-padded except the first one after each
up-sampling. Thesis 7.3.2.2 (lesions, 1x1x3 mm): four levels, factor 2, residual stages, input
180x172x86 -> output 92x84x42 (x, y, z); the in-plane margin is that of two valid 3x3x3 convolutions
per stage, and the halved through-plane margin is met by making the first convolution of every stage
in-plane only (1x3x3 in z, y, x), which suits the 3 mm slices. Both choices are our reading of the
figures, stated here because the thesis text does not fix them.

Tensors are NDHWC float32; shapes below are (z, y, x). The models return logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sirtjax.models._layers import ConvStage, Triple, as_triple, center_crop, max_pool, repeat_upsample


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """Kernels (z, y, x) and paddings ("VALID"/"SAME") of the convolutions of one stage."""

    kernels: tuple[Triple, ...]
    paddings: tuple[str, ...]

    def margin(self, axis: int) -> int:
        """Voxels lost on one side along spatial axis (0=z, 1=y, 2=x) by this stage."""
        return sum((k[axis] - 1) // 2 for k, p in zip(self.kernels, self.paddings) if p == "VALID")


class ValidUNet(nnx.Module):
    """A U-Net whose output tile is smaller than its input tile (valid convolutions).

    Encoder stages at levels 1..L-1 are followed by max pooling by ``factors[l]``; the bottom stage
    uses the encoder spec; each decoder level up-samples by repetition, concatenates the centre-cropped
    encoder features and applies the decoder stage; a 1x1x1 convolution gives ``out_features`` logits.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        features: Sequence[int],
        factors: Sequence[int | Sequence[int]],
        encoder: StageSpec,
        decoder: StageSpec,
        *,
        residual: bool = False,
        norm: str | None = None,
        rngs: nnx.Rngs,
    ):
        features = tuple(int(f) for f in features)
        if len(factors) != len(features) - 1:
            raise ValueError(f"{len(features)} levels need {len(features) - 1} pooling factors, got {len(factors)}")
        self.factors = tuple(as_triple(f) for f in factors)
        self.encoder_spec, self.decoder_spec = encoder, decoder
        self.down = nnx.List(
            [
                ConvStage(in_features if i == 0 else features[i - 1], f, encoder.kernels, encoder.paddings, residual=residual, norm=norm, rngs=rngs)
                for i, f in enumerate(features)
            ]
        )
        self.up = nnx.List(
            [
                ConvStage(features[i + 1] + features[i], features[i], decoder.kernels, decoder.paddings, residual=residual, norm=norm, rngs=rngs)
                for i in reversed(range(len(features) - 1))
            ]
        )
        self.head = nnx.Conv(features[0], out_features, kernel_size=(1, 1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, z', y', x', out) for an input (N, z, y, x, in) of a valid shape."""
        skips = []
        for level, stage in enumerate(self.down):
            x = stage(x)
            if level < len(self.factors):
                skips.append(x)
                x = max_pool(x, self.factors[level])
        for stage, skip, factor in zip(self.up, reversed(skips), reversed(self.factors)):
            x = repeat_upsample(x, factor)
            x = jnp.concatenate([x, center_crop(skip, x.shape[1:4])], axis=-1)
            x = stage(x)
        return self.head(x)

    def _axis_output(self, n: int, axis: int) -> int | None:
        """Output size along one spatial axis for input size n, or None if n is not valid."""
        sizes = []
        for level in range(len(self.factors) + 1):
            n -= 2 * self.encoder_spec.margin(axis)
            if n <= 0:
                return None
            if level < len(self.factors):
                sizes.append(n)
                f = self.factors[level][axis]
                if n % f:
                    return None
                n //= f
        for skip, factor in zip(reversed(sizes), reversed(self.factors)):
            n *= factor[axis]
            if n > skip or (skip - n) % 2:
                return None
            n -= 2 * self.decoder_spec.margin(axis)
            if n <= 0:
                return None
        return n

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Output (z, y, x) for an input (z, y, x); raises ValueError if the input is not valid."""
        out = tuple(self._axis_output(int(n), a) for a, n in enumerate(input_shape))
        if any(o is None for o in out):
            raise ValueError(f"input shape {tuple(input_shape)} is not valid for this U-Net (try input_shape_for)")
        return out  # type: ignore[return-value]

    def input_shape_for(self, min_output: Sequence[int]) -> tuple[int, int, int]:
        """Smallest valid input (z, y, x) whose output is at least `min_output` (z, y, x)."""
        result = []
        for axis, want in enumerate(min_output):
            n = max(int(want), 1)
            while (o := self._axis_output(n, axis)) is None or o < want:
                n += 1
            result.append(n)
        return tuple(result)  # type: ignore[return-value]

    def margin(self) -> tuple[int, int, int]:
        """Voxels lost on each side (z, y, x) between a valid input and its output."""
        shape = self.input_shape_for((1, 1, 1))
        return tuple((i - o) // 2 for i, o in zip(shape, self.output_shape(shape)))  # type: ignore[return-value]


def thesis_liver_unet(
    in_features: int = 1, out_features: int = 1, features: Sequence[int] = (8, 16, 32, 64), *, norm: str | None = None, rngs: nnx.Rngs
) -> ValidUNet:
    """The thesis 4.3.2 liver U-Net (3 mm, factor 3, 189x162x162 -> 163x136x136); widths and normalisation configurable."""
    k = (3, 3, 3)
    return ValidUNet(
        in_features,
        out_features,
        features,
        factors=(3, 3, 3),
        encoder=StageSpec((k, k), ("SAME", "SAME")),
        decoder=StageSpec((k, k), ("VALID", "SAME")),
        norm=norm,
        rngs=rngs,
    )


def lesion_unet(
    in_features: int = 1, out_features: int = 1, features: Sequence[int] = (8, 16, 32, 64), *, rngs: nnx.Rngs
) -> ValidUNet:
    """The thesis 7.3.2.2 lesion U-Net (1x1x3 mm, factor 2, residual; 86x172x180 -> 42x84x92 in z, y, x)."""
    spec = StageSpec(((1, 3, 3), (3, 3, 3)), ("VALID", "VALID"))
    return ValidUNet(in_features, out_features, features, factors=(2, 2, 2), encoder=spec, decoder=spec, residual=True, rngs=rngs)

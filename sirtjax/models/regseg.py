"""Joint registration-segmentation network (paper 004, RegSegNet): cascaded U-Nets that register a
contrast CT onto a non-contrast CT and so carry the contrast CT's liver mask across.

Cascade k sees the fixed image and the moving image warped by the field of cascades 0..k-1
(2 channels) and predicts a displacement ``v_k`` (mm) that refines it: ``u_k(p) = v_k(p) + u_{k-1}(p + v_k(p))``.
The outputs are the composed field, the warped moving image and the warped moving mask, which is
the fixed image's segmentation.

Everything runs on a *network grid*: identity direction, the model's spacing, origin 0 (only index
space matters inside the network), array axes (z, y, x) and field components (x, y, z) mm as in the
registration core, whose warping (:func:`~sirtjax.registration.warp.warp_array`) and composition
(:func:`~sirtjax.registration.warp.compose_displacements`) are used here. The moving image must
already lie on that grid (resampled through an affine pre-alignment: :mod:`sirtjax.segmentation.regseg`). Grid sizes must be
multiples of 2 ** (levels - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sirtjax.models.valid_unet import StageSpec, ValidUNet
from sirtjax.preprocess import PAD_VALUE
from sirtjax.registration.warp import compose_displacements, warp_array
from sirtjax.volume import Volume


class RegSegOutput(NamedTuple):
    """Batched outputs on the network grid: field (N, z, y, x, 3) mm, warped image and warped mask (N, z, y, x)."""

    displacement_mm: jax.Array
    warped: jax.Array
    warped_mask: jax.Array


def registration_unet(features: Sequence[int], *, rngs: nnx.Rngs) -> ValidUNet:
    """One cascade: a same-size U-Net (two zero-padded 3x3x3 convolutions per stage, leaky ReLU, no normalisation,
    down-sampling by 2, as VoxelMorph's), 2 input channels, 3 outputs, starting as the zero field."""
    same = StageSpec(((3, 3, 3), (3, 3, 3)), ("SAME", "SAME"))
    net = ValidUNet(2, 3, features, factors=(2,) * (len(features) - 1), encoder=same, decoder=same, rngs=rngs)
    net.head.kernel.set_value(jnp.zeros_like(net.head.kernel.get_value()))
    net.head.bias.set_value(jnp.zeros_like(net.head.bias.get_value()))
    return net


class RegSegNet(nnx.Module):
    """``cascades`` registration U-Nets (:func:`registration_unet`), each (fixed, warped moving) -> displacement (mm)."""

    def __init__(self, features: Sequence[int] = (8, 16, 32, 32), cascades: int = 3, *, scale_mm: float = 10.0, rngs: nnx.Rngs):
        self.scale_mm = float(scale_mm)
        self.cascades = nnx.List([registration_unet(features, rngs=rngs) for _ in range(int(cascades))])

    def __call__(self, fixed: jax.Array, moving: jax.Array, moving_mask: jax.Array, spacing_mm: Sequence[float], *,
                 upto: int | None = None, frozen: int = 0) -> RegSegOutput:
        """Run cascades 0..upto-1 (all by default) on (N, z, y, x) fixed, moving and moving-mask arrays.

        ``spacing_mm`` (x, y, z) is the network grid's; ``frozen``: no gradient flows into the first
        ``frozen`` cascades (the paper's cascade-by-cascade training).
        """
        grid = network_grid(fixed.shape[1:4], spacing_mm)
        warp = jax.vmap(lambda a, u, pad: warp_array(grid.with_array(a), grid.with_array(u), 1, pad), (0, 0, None))
        compose = jax.vmap(lambda v, u: compose_displacements(grid.with_array(v), grid.with_array(u)).array)
        u = jnp.zeros((*fixed.shape, 3), jnp.float32)
        for k, net in enumerate(list(self.cascades)[:upto]):
            warped = warp(moving, u, PAD_VALUE)
            v = net(jnp.stack([fixed, warped], axis=-1)) * self.scale_mm
            u = compose(v, u)
            if k < frozen:
                u = jax.lax.stop_gradient(u)
        return RegSegOutput(u, warp(moving, u, PAD_VALUE), warp(moving_mask, u, 0.0))


def network_grid(shape_zyx: Sequence[int], spacing_mm: Sequence[float]) -> Volume:
    """An empty network grid: identity direction, origin 0, spacing (x, y, z) mm (host geometry)."""
    return Volume(np.zeros(tuple(int(n) for n in shape_zyx), np.float32), np.asarray(spacing_mm, np.float64).reshape(3),
                  np.zeros(3), np.eye(3))

"""An ensemble of segmentation networks of one architecture: the mean of their probabilities, as one network.

Networks trained apart make partly independent errors, so the mean of their probabilities segments better than
either (nnU-Net ships its five cross-validation folds this way). :class:`Ensemble` returns the logits whose
sigmoid (one output channel) or softmax (several) is that mean, so inference, tiling and post-processing treat it
as any other network. Its cost is one forward pass per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def mean_probability_logits(logits: jax.Array) -> jax.Array:
    """Logits (..., C) whose sigmoid (C = 1) or softmax (C > 1) is the mean over axis 0 of those of `logits`
    (members, ..., C), computed in log space so that saturated members stay finite."""
    n = jnp.log(logits.shape[0])
    if logits.shape[-1] == 1:
        log_p = jax.scipy.special.logsumexp(jax.nn.log_sigmoid(logits), axis=0) - n
        log_q = jax.scipy.special.logsumexp(jax.nn.log_sigmoid(-logits), axis=0) - n
        return log_p - log_q
    return jax.scipy.special.logsumexp(jax.nn.log_softmax(logits, axis=-1), axis=0) - n


class Ensemble(nnx.Module):
    """Networks of one architecture and tile geometry whose output is the mean of their probabilities."""

    def __init__(self, members: Sequence[nnx.Module]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nnx.List(members)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (B, z, y, x, C) of the members' mean probability for input `x` (B, z, y, x, C_in)."""
        return mean_probability_logits(jnp.stack([m(x) for m in self.members]))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Output tile (z, y, x) for an input tile: the members'."""
        return self.members[0].output_shape(input_shape)

    def input_shape_for(self, min_output: Sequence[int]) -> tuple[int, int, int]:
        """Smallest valid input tile whose output covers `min_output`: the members'."""
        return self.members[0].input_shape_for(min_output)

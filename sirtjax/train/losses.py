"""Binary segmentation losses on logits (N, z, y, x, 1) against 0/1 labels of the same shape.

Each function returns one value per example (N,); the training objective averages them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("dice", "dice_ce", "dice_focal")


def soft_dice(probabilities: jax.Array, labels: jax.Array, *, eps: float = 1.0) -> jax.Array:
    """Soft DSC per example (N,) of probabilities in [0, 1] against labels: 2 sum(p g) / (sum p + sum g); eps smooths empty labels."""
    p = probabilities.reshape(probabilities.shape[0], -1)
    g = labels.reshape(labels.shape[0], -1).astype(p.dtype)
    return (2.0 * jnp.sum(p * g, axis=1) + eps) / (jnp.sum(p, axis=1) + jnp.sum(g, axis=1) + eps)


def soft_dice_loss(logits: jax.Array, labels: jax.Array, *, eps: float = 1.0) -> jax.Array:
    """1 - soft DSC per example with p = sigmoid(logits) (:func:`soft_dice`)."""
    return 1.0 - soft_dice(jax.nn.sigmoid(logits), labels, eps=eps)


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean binary cross-entropy per example (optax.sigmoid_binary_cross_entropy)."""
    ce = optax.losses.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
    return jnp.mean(ce.reshape(ce.shape[0], -1), axis=1)


def focal_loss(logits: jax.Array, labels: jax.Array, *, gamma: float = 2.0) -> jax.Array:
    """Mean sigmoid focal loss per example (optax.sigmoid_focal_loss, alpha unset, gamma 2)."""
    fl = optax.losses.sigmoid_focal_loss(logits, labels.astype(logits.dtype), gamma=gamma)
    return jnp.mean(fl.reshape(fl.shape[0], -1), axis=1)


def segmentation_loss(logits: jax.Array, labels: jax.Array, kind: str) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of a batch and its named terms: 'dice', 'dice_ce' or 'dice_focal' (equal weights).

    The Dice term pools the whole batch (nnU-Net's batch Dice), so a patch without foreground does
    not pin the loss at 1; CE and focal terms are voxel means.
    """
    terms = {"dice": soft_dice_loss(logits.reshape(1, -1), labels.reshape(1, -1))[0]}
    if kind == "dice_ce":
        terms["ce"] = jnp.mean(bce_loss(logits, labels))
    elif kind == "dice_focal":
        terms["focal"] = jnp.mean(focal_loss(logits, labels))
    elif kind != "dice":
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    return sum(terms.values()), terms

"""The optimiser and the pure, jit-compiled training step (functional NNX: graphdef + params).

Adam runs every step; the thesis schedule (learning rate x0.2 when the validation DSC stops
improving) is `optax.contrib.reduce_on_plateau`, whose state is updated only after each validation
with value = 1 - DSC, and whose current scale multiplies Adam's updates inside the step.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sirtjax.train.losses import segmentation_loss


class OptState(NamedTuple):
    """Adam state and reduce-on-plateau state (a pytree, checkpointed as a whole)."""

    adam: Any
    plateau: Any


def make_optimizers(learning_rate: float, *, factor: float, patience: int, min_scale: float) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(Adam, reduce-on-plateau) transformations of the thesis schedule."""
    adam = optax.adam(learning_rate)
    plateau = optax.contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=0.0, atol=1e-4, min_scale=min_scale)
    return adam, plateau


def init_opt_state(adam: optax.GradientTransformation, plateau: optax.GradientTransformation, params: Any) -> OptState:
    """Initial optimiser state for params."""
    return OptState(adam.init(params), plateau.init(params))


@functools.lru_cache(maxsize=8)
def make_train_step(graphdef: nnx.GraphDef, learning_rate: float, loss_kind: str):
    """step(params, opt_state, x, y) -> (params, opt_state, terms): one jit-compiled Adam step.

    x (B, *in_patch, C) float32, y (B, *out_patch, 1) 0/1; terms maps 'loss' and each loss term to a
    scalar. Cached per (architecture, learning rate, loss) so repeated runs in one process compile once.
    """
    adam = optax.adam(learning_rate)  # the same transformation as make_optimizers' (stateless, pure)

    def objective(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return segmentation_loss(logits, y, loss_kind)

    @jax.jit
    def step(params, opt_state: OptState, x, y):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(params, x, y)
        updates, adam_state = adam.update(grads, opt_state.adam, params)
        updates = jax.tree.map(lambda u: u * opt_state.plateau.scale, updates)
        params = optax.apply_updates(params, updates)
        return params, OptState(adam_state, opt_state.plateau), {"loss": loss, **terms}

    return step


@functools.partial(jax.jit, static_argnames="decay")
def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """The running average of the weights after one step: decay * ema + (1 - decay) * params, per floating-point
    leaf (any other leaf is taken from params)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p if jnp.issubdtype(p.dtype, jnp.floating) else p, ema, params)


def plateau_update(plateau: optax.GradientTransformation, opt_state: OptState, params: Any, val_dice: float) -> OptState:
    """Feed one validation DSC to reduce-on-plateau (value 1 - DSC); returns the new state."""
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, state = plateau.update(zeros, opt_state.plateau, params, value=jnp.asarray(1.0 - val_dice, jnp.float32))
    return OptState(opt_state.adam, state)


def data_parallel(batch_size: int) -> tuple[NamedSharding, NamedSharding]:
    """(batch sharding over all local devices along axis 0, replicated sharding) for data parallelism.

    Raises ValueError when batch_size is not a multiple of the local device count.
    """
    devices = jax.local_devices()
    if batch_size % len(devices):
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {len(devices)} local devices")
    mesh = Mesh(devices, ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())

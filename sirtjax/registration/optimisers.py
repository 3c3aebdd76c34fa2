"""The optimisers of a level as optax transformations: Adam with the level's cosine step size, or L-BFGS with a zoom
line search (:func:`transformation`), and their batched initial states (:class:`LevelOptimiser`)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sirtjax.programs import Program, ProgramCache


class LevelCosineState(NamedTuple):
    """The schedule as arrays: step count, initial step size (mm) and level length."""

    count: jax.Array
    learning_rate: jax.Array
    iterations: jax.Array


def scale_by_level_cosine(learning_rate: float, iterations: int) -> optax.GradientTransformation:
    """Updates times minus a step size (in the parameters' unit, mm here) decaying by a cosine to 10 % of
    ``learning_rate`` over ``iterations`` steps, then constant.

    The step size and the level length are arrays in the state, not constants of the program, so one
    compiled step serves every level, learning rate and iteration count of equal shapes (and the
    persistent cache hits across them); :func:`optax.cosine_decay_schedule` would bake them in.
    """

    def init(params):
        del params
        return LevelCosineState(jnp.zeros((), jnp.int32), jnp.float32(learning_rate),
                                jnp.maximum(jnp.float32(iterations), 1.0))

    def update(updates, state: LevelCosineState, params=None):
        del params
        frac = jnp.minimum(state.count.astype(jnp.float32) / state.iterations, 1.0)
        lr = state.learning_rate * (0.1 + 0.45 * (1.0 + jnp.cos(jnp.pi * frac)))
        return jax.tree.map(lambda u: -lr * u, updates), state._replace(count=state.count + 1)

    return optax.GradientTransformation(init, update)


def adam_cosine(learning_rate: float, iterations: int) -> optax.GradientTransformationExtraArgs:
    """Adam whose step size (mm) decays by a cosine to 10 % over the level (:func:`scale_by_level_cosine`)."""
    return optax.chain(optax.scale_by_adam(), scale_by_level_cosine(learning_rate, iterations))


OPTIMISERS = ("adam", "lbfgs")


def check_optimiser(kind: str) -> None:
    """Raises ValueError naming an optimiser that is not one of :data:`OPTIMISERS`."""
    if kind not in OPTIMISERS:
        raise ValueError(f"unknown optimiser '{kind}' (use {' or '.join(OPTIMISERS)})")


def transformation(kind: str, learning_rate: float, iterations: int) -> optax.GradientTransformationExtraArgs:
    """The optimiser of a level: ``adam`` (:func:`adam_cosine`) or ``lbfgs``.

    L-BFGS (:func:`optax.lbfgs`, memory 10) takes its step length from a zoom line search on the step's own
    samples, not from ``learning_rate``; the line search costs extra objective evaluations a step. With random
    samples every step sees another objective, so its curvature pairs mix samples (approximate).
    """
    check_optimiser(kind)
    return adam_cosine(learning_rate, iterations) if kind == "adam" else optax.lbfgs()


@dataclasses.dataclass(frozen=True)
class LevelOptimiser:
    """The optimiser of one level: its kind (:data:`OPTIMISERS`), step size (mm) and length (steps)."""

    kind: str = "adam"
    learning_rate: float = 1.0
    iterations: int = 1

    def init(self, params: Any, programs: ProgramCache | None = None) -> Any:
        """The optimiser state of batched params (leading axis B), from one compiled program per kind and
        params shape (kept by ``programs``): the step size and length enter as arguments (eager
        ``vmap(tx.init)`` compiled a program per operation, and a jit of it one per level)."""
        return init_program(*self.init_args(params), programs=programs)

    def init_args(self, params: Any) -> tuple:
        """The arguments of the init program for batched params: kind, params, per-member step size and length."""
        batch = jax.tree.leaves(params)[0].shape[0]
        return self.kind, params, np.full(batch, self.learning_rate, np.float32), np.full(batch, self.iterations, np.int32)


def init_states(kind: str, params, learning_rate, iterations):
    """The optimiser states of batched params (leading axis B), each member with its own step size and length."""
    return jax.vmap(lambda p, lr, n: transformation(kind, lr, n).init(p))(params, learning_rate, iterations)


init_program = Program(init_states, "optimiser init", static_argnums=(0,))

"""The jit-compiled optimisation step and the Python convergence loop around it.

A step is one pure function ``(params, opt_state, data, weights, key, active) -> (params,
opt_state, terms)``: ``value_and_grad`` of the objective, ``tx.update`` and ``apply_updates``, all
under one ``jax.jit``. It is vmapped over a leading batch axis (pairs of equal shape, weight
settings, candidate starts); a member whose ``active`` flag is False keeps its params and state, so
converged members stop moving while the others go on. Resolution levels, convergence and logging
stay in the plain Python loop of :func:`run_level`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Objective = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
Progress = Callable[[str, int, int], None]


def make_step(objective: Objective, tx: optax.GradientTransformation) -> Callable:
    """The jit-compiled, batch-vmapped optimisation step for objective(params, data, weights, key).

    Build it once per static setting (see :func:`cached_step`) so later calls reuse the compiled
    program instead of tracing a new closure.
    """

    def step(params, opt_state, data, weights, key, active):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(params, data, weights, key)
        updates, new_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        terms = dict(terms, loss=loss)
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), terms

    def batched(params, opt_state, data, weights, key, active):
        args = (params, opt_state, data, weights, key, active)
        if jax.tree.leaves(params)[0].shape[0] != 1:
            return jax.vmap(step)(*args)
        # a batch of one runs unbatched: vmapped gathers/scatters lower to slower batched forms on CPU
        out = step(*jax.tree.map(lambda x: x[0], args))
        return jax.tree.map(lambda x: x[None], out)

    return jax.jit(batched)


def adam_cosine(learning_rate: float, iterations: int) -> optax.GradientTransformation:
    """Adam whose step size (in the parameters' unit, mm here) decays by a cosine to 10 % over the level."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, max(iterations, 1), alpha=0.1))


@dataclasses.dataclass(frozen=True)
class Convergence:
    """Stop a member when its best loss improved by less than ``rel_tol`` over ``patience`` steps."""

    max_iterations: int
    patience: int = 10
    rel_tol: float = 1e-4
    min_iterations: int = 10


@dataclasses.dataclass
class LevelLog:
    """What a level did, per batch member: iterations run, loss history (iterations,) and timings (s)."""

    label: str
    iterations: np.ndarray
    loss_history: np.ndarray
    last_terms: dict[str, np.ndarray]
    compile_s: float
    run_s: float


def run_level(
    step: Callable,
    params: Any,
    tx: optax.GradientTransformation,
    data: Any,
    weights: Any,
    key: jax.Array,
    conv: Convergence,
    *,
    label: str = "",
    progress: Progress | None = None,
) -> tuple[Any, LevelLog]:
    """Optimise batched params (leading axis B) until every member converged or max_iterations.


    Each member's best params (lowest loss seen) are returned. The first call compiles the step (or finds it in JAX's in-memory or persistent cache); its time
    beyond a typical step is reported as ``compile_s``, the rest as ``run_s``. Returns the final
    params and a :class:`LevelLog`.
    """
    batch = jax.tree.leaves(params)[0].shape[0]
    opt_state = jax.vmap(tx.init)(params)
    active = jnp.ones((batch,), bool)
    keys = jax.random.split(key, (conv.max_iterations, batch))
    history = np.full((conv.max_iterations, batch), np.nan, np.float32)
    iterations = np.zeros(batch, np.int64)
    best = np.full(batch, np.inf)
    best_at = np.zeros(batch, np.int64)
    act = np.ones(batch, bool)
    terms: dict[str, jax.Array] = {}
    first_s = 0.0
    t0 = time.perf_counter()
    best_params = params
    for it in range(conv.max_iterations):
        new_params, opt_state, terms = step(params, opt_state, data, weights, keys[it], active)
        loss = np.asarray(terms["loss"], np.float64)
        if it == 0:
            first_s = time.perf_counter() - t0
        history[it, act] = loss[act]
        iterations[act] += 1
        threshold = np.where(np.isfinite(best), best - conv.rel_tol * np.abs(np.where(np.isfinite(best), best, 0.0)), np.inf)
        improved = loss < threshold
        better = improved & act
        best_at = np.where(better, it, best_at)
        best = np.where(better, loss, best)
        if better.any():  # the loss was evaluated at the step's input params
            sel = jnp.asarray(better)
            best_params = jax.tree.map(lambda b, p: jnp.where(sel.reshape((-1,) + (1,) * (p.ndim - 1)), p, b),
                                       best_params, params)
        params = new_params
        act &= ~((it + 1 >= conv.min_iterations) & (it - best_at >= conv.patience))
        if progress is not None:
            progress(label, it + 1, conv.max_iterations)
        if not act.any():
            break
        active = jnp.asarray(act)
    total_s = time.perf_counter() - t0
    n = int(iterations.max())
    # the first call compiles (or loads from a cache); charge it the mean time of the others
    per_step = (total_s - first_s) / max(n - 1, 1)
    compile_s = max(first_s - per_step, 0.0) if n > 1 else first_s
    log = LevelLog(label, iterations, history[:n], {k: np.asarray(v) for k, v in terms.items()},
                   compile_s, total_s - compile_s)
    return best_params, log

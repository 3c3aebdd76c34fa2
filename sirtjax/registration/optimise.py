"""The jit-compiled optimisation steps and the Python loop around them.

A step is one pure function ``(params, opt_state, data, weights, key, active) -> (params,
opt_state, terms)``: ``value_and_grad`` of the objective, the optax transformation's ``update``
(:func:`~sirtjax.registration.optimisers.transformation`: Adam with the level's cosine step size, or L-BFGS)
and ``apply_updates``. It is vmapped over a leading batch axis (pairs of equal shape, weight settings,
candidate starts); a member whose ``active`` flag is False keeps its params and state, so converged
members stop moving while the others go on. :func:`make_step` compiles a run of up to
``CHUNK_STEPS`` such steps as one ``lax.while_loop`` that also applies the :class:`Convergence` rule
after every step, so a level makes one host round trip per chunk instead of one per step (the
dispatch of a step cost about as much as a small step itself on CPU, and a GPU would idle between
steps). Resolution levels, progress and logging stay in the plain Python loop of :func:`run_level`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sirtjax.programs import Program, ProgramCache
from sirtjax.registration.optimisers import LevelOptimiser, init_program, init_states

Objective = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
Progress = Callable[[str, int, int], None]

CHUNK_STEPS = 25  # steps per device call (the first call of a level runs one, so compile time can be told apart)


def make_step(objective: Objective, tx: optax.GradientTransformationExtraArgs, name: str) -> Program:
    """The jit-compiled, batch-vmapped optimisation of objective(params, data, weights, key) by the optax
    transformation ``tx``, a chunk of steps per call.

    ``tx.update`` gets the loss, the gradient and the objective at the step's samples (``value``, ``grad``,
    ``value_fn``) for line searches. It must read every per-level constant (step size, level length) from
    its state, as :func:`~sirtjax.registration.optimisers.transformation`'s do: the program is traced once and then serves every
    instance of the same kind, whose states carry their own constants.

    The returned function maps ``(params, opt_state, data, weights, key, active, tail, start, count,
    min_iterations, rel_tol)`` to ``(params, opt_state, out)``: it runs global steps ``start`` ..
    ``start + count - 1`` (``count`` <= ``CHUNK_STEPS``; step i draws its samples with
    ``fold_in(key, i)``), stopping early once no member is active. ``tail`` (2 window, B) holds the
    last losses for the :class:`Convergence` rule (NaN before there are any). ``out`` holds the last
    step's terms (``loss`` among them), ``_losses`` (CHUNK_STEPS, B; NaN where a member did not step),
    ``_steps`` (B,) the steps each member made, and ``_active`` and ``_tail`` to pass to the next call.

    ``name`` identifies the objective's static settings: the step is a :class:`~sirtjax.programs.Program`,
    its executables kept by the :class:`~sirtjax.programs.ProgramCache` passed to :func:`run_level`.
    Compiled with :func:`step_compiler_options`.
    Build it once per static setting (the affine and non-rigid stages cache theirs) so later calls
    reuse the compiled program instead of tracing a new closure.
    """

    def step(params, opt_state, data, weights, key, active):
        (loss, terms), grads = jax.value_and_grad(objective, has_aux=True)(params, data, weights, key)
        value_fn = lambda p: objective(p, data, weights, key)[0]  # noqa: E731 - the same samples as the gradient
        updates, new_state = tx.update(grads, opt_state, params, value=loss, grad=grads, value_fn=value_fn)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        terms = dict(terms, loss=loss)
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), terms

    def batched(params, opt_state, data, weights, keys, active):
        args = (params, opt_state, data, weights, keys, active)
        if active.shape[0] != 1:
            return jax.vmap(step)(*args)
        # a batch of one runs unbatched: vmapped gathers/scatters lower to slower batched forms on CPU
        out = step(*jax.tree.map(lambda x: x[0], args))
        return jax.tree.map(lambda x: x[None], out)

    one_step = jax.jit(batched)  # traced once: the shape of its terms, then the loop's body reuses that trace

    def chunk(params, opt_state, data, weights, key, active, tail, start, count, min_iterations, rel_tol):
        batch = active.shape[0]
        keys_at = lambda i: jax.random.split(jax.random.fold_in(key, i), batch)  # noqa: E731
        terms0 = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                              jax.eval_shape(one_step, params, opt_state, data, weights, keys_at(start), active)[2])
        losses0 = jnp.full((CHUNK_STEPS, batch), jnp.nan, jnp.float32)

        def body(carry):
            j, params, opt_state, active, tail, terms, losses, steps = carry
            params, opt_state, terms = one_step(params, opt_state, data, weights, keys_at(start + j), active)
            loss = terms["loss"].astype(jnp.float32)
            losses = losses.at[j].set(jnp.where(active, loss, jnp.nan))
            tail = jnp.concatenate([tail[1:], jnp.where(active, loss, tail[-1])[None]])
            steps = steps + active
            active = active & ~window_converged(tail, start + j + 1, min_iterations, rel_tol)
            return j + 1, params, opt_state, active, tail, terms, losses, steps

        carry = (jnp.int32(0), params, opt_state, active, tail, terms0, losses0, jnp.zeros((batch,), jnp.int32))
        _, params, opt_state, active, tail, terms, losses, steps = jax.lax.while_loop(
            lambda c: (c[0] < count) & jnp.any(c[3]), body, carry)
        return params, opt_state, dict(terms, _losses=losses, _active=active, _tail=tail, _steps=steps)

    return Program(chunk, name, compiler_options=step_compiler_options())


@functools.lru_cache(maxsize=1)
def step_compiler_options() -> dict[str, bool]:
    """XLA options for the steps: on CPU, XLA's older loop emitters instead of its MLIR fusion emitters.

    They change how XLA generates CPU code, not what it computes. On the registration steps they
    compiled 26-29 % faster (3 mm pair: 25 -> 18.5 s cnn-guided, 34 -> 24 s CNN&LM, six level
    steps) and ran as fast or faster (benchmarks/registration/README.md). The option exists in the
    XLA of current jaxlib releases; where a jaxlib does not know it (it rejects it by name), or on
    other backends, the steps compile with XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return {}
    options = {"xla_cpu_use_fusion_emitters": False}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options)(jnp.zeros(()))
    except Exception as exc:  # noqa: BLE001 - XlaRuntimeError / JaxRuntimeError depending on the version
        if "No such compile option" not in str(exc):
            raise
        return {}
    return options


@dataclasses.dataclass(frozen=True)
class Convergence:
    """Stop a member when the mean loss of its last ``window`` steps is no longer lower than the mean of
    the ``window`` steps before by more than ``rel_tol`` times its magnitude (after ``min_iterations``).

    Comparing window means instead of single losses keeps the rule working when every step sees a
    fresh random sample of voxels: one sampled loss is noisy, a mean over ``window`` steps much less,
    and once the optimisation has flattened the window difference is below the noise and the rule
    fires; a single lucky draw can neither stop nor prolong a level.
    """

    max_iterations: int
    window: int = 10
    rel_tol: float = 1e-3
    min_iterations: int = 20


def window_converged(tail: jax.Array, n: jax.Array, min_iterations: jax.Array, rel_tol: jax.Array) -> jax.Array:
    """Per member (B,): whether a member whose last 2 window losses are ``tail`` (2 window, B), after ``n``
    steps, meets :class:`Convergence` (never before ``max(min_iterations, 2 window)`` steps)."""
    k = tail.shape[0] // 2
    prev, last = jnp.mean(tail[:k], axis=0), jnp.mean(tail[k:], axis=0)
    return (n >= jnp.maximum(min_iterations, 2 * k)) & (prev - last <= rel_tol * jnp.abs(last))


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
    step: Program,
    params: Any,
    optimiser: LevelOptimiser,
    data: Any,
    weights: Any,
    key: jax.Array,
    conv: Convergence,
    *,
    label: str = "",
    progress: Progress | None = None,
    programs: ProgramCache | None = None,
) -> tuple[Any, LevelLog]:
    """Optimise batched params (leading axis B) until every member converged (see :class:`Convergence`) or max_iterations.

    A converged member keeps its params while the others go on. The first call compiles the step
    (or loads it from ``programs``, or finds it in JAX's in-memory cache without one); its time beyond a typical step is reported
    as ``compile_s``, the rest as ``run_s``. Returns the final params and a :class:`LevelLog`.
    """
    batch = jax.tree.leaves(params)[0].shape[0]
    opt_state = optimiser.init(params, programs)
    active, tail, _, _, *rule = _loop_args(batch, conv)
    chunks: list[np.ndarray] = []
    iterations = np.zeros(batch, np.int64)
    out: dict[str, jax.Array] = {}
    done, first_s = 0, 0.0
    t0 = time.perf_counter()
    while done < conv.max_iterations:
        count = 1 if done == 0 else min(CHUNK_STEPS, conv.max_iterations - done)
        params, opt_state, out = step(params, opt_state, data, weights, key, active, tail, np.int32(done),
                                      np.int32(count), *rule, programs=programs)
        chunks.append(np.asarray(out.pop("_losses"))[:count])  # waits for the chunk
        active, tail = out.pop("_active"), out.pop("_tail")
        iterations += np.asarray(out.pop("_steps"))
        if done == 0:
            first_s = time.perf_counter() - t0
        done += count
        if progress is not None:
            progress(label, done, conv.max_iterations)
        if not np.asarray(active).any():
            break
    total_s = time.perf_counter() - t0
    history = np.concatenate(chunks)
    n = int(iterations.max())
    # the first call compiles (or loads from a cache) and runs one step; charge it the mean time of the others
    per_step = (total_s - first_s) / max(n - 1, 1)
    compile_s = max(first_s - per_step, 0.0) if n > 1 else first_s
    log = LevelLog(label, iterations, history[:n], {k: np.asarray(v) for k, v in out.items()},
                   compile_s, total_s - compile_s)
    return params, log


def _loop_args(batch: int, conv: Convergence) -> tuple:
    """The step's arguments after the data in a level's first call: every member active, no losses yet, one step
    from step 0, and the stopping rule (``active, tail, start, count, min_iterations, rel_tol``)."""
    return (np.ones((batch,), bool), np.full((2 * conv.window, batch), np.nan, np.float32), np.int32(0), np.int32(1),
            np.int32(conv.min_iterations), np.float32(conv.rel_tol))


def expect_level(step: Program, params: Any, optimiser: LevelOptimiser, data: Any, weights: Any, key: jax.Array,
                 conv: Convergence, programs: ProgramCache | None) -> None:
    """Have ``programs`` load ahead the programs :func:`run_level` will run with these arguments (``params`` may be
    abstract, :class:`jax.ShapeDtypeStruct` leaves, as may ``data``'s): its optimiser's init and its step."""
    if programs is None:
        return
    init_args = optimiser.init_args(params)
    programs.expect(init_program, init_args)
    opt_state = jax.eval_shape(functools.partial(init_states, optimiser.kind), *init_args[1:])
    batch = jax.tree.leaves(params)[0].shape[0]
    programs.expect(step, (params, opt_state, data, weights, key, *_loop_args(batch, conv)))

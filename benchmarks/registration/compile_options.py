"""Compile and run time of each level step under XLA's default CPU emitters and under the steps' options.

Lowers the six level steps (one step per call) of one 3 mm phantom pair once, compiles each with XLA's defaults and
with :func:`sirtjax.registration.optimise.step_compiler_options`, and times 3 x 10 calls of each
executable (best of 3). Re-run after a jax upgrade to see whether the options still pay.

    python benchmarks/registration/compile_options.py --mode cnn-guided --seed 2 [--also xla_backend_optimization_level=1]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from run import guidance
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.registration import affine as affine_stage
from sirtjax import registration
from sirtjax.registration import levels as reg_levels
from sirtjax.registration.nonrigid import nonrigid_step
from sirtjax.registration.optimise import step_compiler_options


def level_steps(mode: str, seed: int) -> list[tuple[str, object, tuple]]:
    """(name, traceable step, example arguments) of every affine and non-rigid level of one pair."""
    study = generate_study(seed, PhantomConfig())
    im = study.images
    pair = registration.make_pair(im["maa_ct"], im["diag_ct"],
                         **guidance(mode, im["maa_ct_labels"], im["diag_ct_labels"], im["maa_ct_liver"], im["diag_ct_liver"]))
    cfg = registration.PRESETS[mode]
    levels = reg_levels.prepare_levels([pair], cfg)
    seg = int(levels[0].fixed.array.shape[-1]) > 1
    # one step per call (count 1), no early stop: (key, active, tail, start, count, min_iterations, rel_tol)
    run_one = (jax.random.key(0), jnp.ones((1,), bool), jnp.full((20, 1), jnp.nan), jnp.int32(0), jnp.int32(1),
               jnp.int32(10**6), jnp.float32(0.0))
    steps = []
    for li, d in enumerate(levels):
        step, tx = affine_stage.affine_step(cfg.similarity.options(cfg.affine.samples), cfg.affine.on, 1.0, 100)
        p = affine_stage.init_params(jnp.zeros((1, 3)))
        steps.append((f"affine {li}", step, (p, tx.init(p), d, None, *run_one)))
    stage = cfg.main_stage
    for li, d in enumerate(levels[len(levels) - stage.levels:]):  # the levels the preset's guided stage runs
        step, tx = nonrigid_step(cfg.similarity.options(stage.samples), cfg.regulariser_options(stage), stage.image_term,
                                 seg, 1.0, 60)
        v = jnp.zeros(d.fixed.array.shape[:4] + (3,))
        steps.append((f"non-rigid {li}", step, (v, tx.init(v), d, jax.tree.map(lambda x: x[None], stage.weights()),
                                                *run_one)))
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="cnn-guided")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--also", action="append", default=[], metavar="OPTION=VALUE",
                    help="a further variant: the step options plus this XLA option (VALUE as JSON)")
    a = ap.parse_args()
    variants = {"XLA defaults": {}, "step options": step_compiler_options()}
    for extra in a.also:
        key, _, value = extra.partition("=")
        variants[f"+ {extra}"] = {**step_compiler_options(), key: json.loads(value)}
    print(f"| level step | {' | '.join(f'{v} compile s | {v} run ms' for v in variants)} |")
    print("| --- |" + " --- |" * (2 * len(variants)))
    totals = dict.fromkeys(variants, 0.0)
    for name, step, args in level_steps(a.mode, a.seed):
        lowered = jax.jit(step.fn).lower(*args)
        cells = []
        for variant, options in variants.items():
            t0 = time.perf_counter()
            compiled = lowered.compile(compiler_options=options)
            compile_s = time.perf_counter() - t0
            totals[variant] += compile_s
            jax.block_until_ready(compiled(*args))
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(10):
                    out = compiled(*args)
                jax.block_until_ready(out)
                runs.append((time.perf_counter() - t0) / 10)
            cells += [f"{compile_s:.2f}", f"{1e3 * min(runs):.1f}"]
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    print(f"| total compile | {' | '.join(f'{t:.1f} |' for t in totals.values())} |")


if __name__ == "__main__":
    main()

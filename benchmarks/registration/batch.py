"""One pair at a time against a vmapped batch of pairs: wall time per pair, throughput and accuracy.

Made for a GPU node (the issue's targets there: <= 1 s per pair, and the throughput of a batch of 32),
it runs on any backend. Pairs: fixed = MAA CT, moving = diagnostic CT or MR of phantom seeds
``--seeds`` (all of one grid, as ``register_batch`` needs equal fixed shapes). For each preset:

- single: the first ``--single`` pairs registered one after another (a batch of one each); the first
  call compiles, the others are warm (their median is the per-pair time);
- batch: all pairs registered in one batch, twice (the first call compiles for the batch shape);
  throughput = pairs / warm wall.

Both go through :func:`timed_batch`, ``register_batch``'s phases timed one by one.

Accuracy is the mean |u - u_true| over the fixed liver (mm) and RMSD (thesis 5.3.4) of every pair,
so a batch is seen to register as well as one pair at a time (its random samples differ).

    python benchmarks/registration/batch.py --seeds 1-32 --out benchmarks/registration/results/gpu
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jax
import numpy as np

from run import field_error, guidance, seed_range
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.phantom.deform import true_displacement
from sirtjax import registration
from sirtjax.registration import api as reg_api, levels as reg_levels, stages as reg_stages
from sirtjax.registration.grid_search import evaluate


def _cpu_only() -> None:
    """Pool initialiser: phantoms are made on the host's cores, leaving the accelerator to the registrations."""
    jax.config.update("jax_platforms", "cpu")


def load_pair(seed: int, moving: str, config: PhantomConfig) -> dict:
    """One seed's pair: volumes, label maps, masks and the true displacement field."""
    study = generate_study(seed, config)
    f = study.images["maa_ct"]
    return dict(seed=seed, f=f, m=study.images[moving], fl=study.images["maa_ct_labels"],
                ml=study.images[f"{moving}_labels"], fm=study.images["maa_ct_liver"],
                mm=study.images[f"{moving}_liver"], truth=true_displacement(study.truth, f, moving=moving))


def load_pairs(seeds: list[int], moving: str, config: PhantomConfig) -> list[dict]:
    """:func:`load_pair` of every seed, in parallel processes (one per core)."""
    with ProcessPoolExecutor(min(len(seeds), os.cpu_count() or 1), mp_context=mp.get_context("spawn"),
                             initializer=_cpu_only) as pool:
        return list(pool.map(functools.partial(load_pair, moving=moving, config=config), seeds))


def timed_batch(config: registration.RegistrationConfig, pairs: list[registration.Pair], key: jax.Array) -> tuple[dict, list]:
    """``register_batch`` with every phase timed (wall s, results blocked on): host preparation, affine,
    non-rigid, finishing, and each level's iterations (the batch's most), compile and run seconds."""
    t = {}
    t0 = time.perf_counter()
    pyramids = reg_levels.pair_pyramids(pairs, config)
    levels = jax.block_until_ready(reg_levels.prepare_levels(pairs, config, pyramids))
    runs = jax.block_until_ready(reg_stages.nonrigid_runs(pairs, levels, None, config, pyramids))
    t["prepare_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    k1, k2 = jax.random.split(key)
    affine, alogs = reg_stages.run_affine(levels, reg_levels.affine_start(pairs, config), config, k1)
    jax.block_until_ready(affine)
    t["affine_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    residual, stages = reg_stages.run_nonrigid_stages(runs, affine, config, k2)
    jax.block_until_ready(residual)
    t["nonrigid_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    logs = [("affine", lg) for lg in alogs] + stages
    results = [reg_api.finish(p, reg_levels.take(affine, i), reg_levels.take(residual, i), [(s, lg, i) for s, lg in logs])
               for i, p in enumerate(pairs)]
    t["finish_s"] = time.perf_counter() - t3
    t["total_s"] = time.perf_counter() - t0
    t["levels"] = [{"stage": s, "level": lg.label, "iterations": int(np.max(lg.iterations)),
                    "compile_s": round(lg.compile_s, 2), "run_s": round(lg.run_s, 3)} for s, lg in logs]
    return t, results


def accuracy(result: registration.RegistrationResult, p: dict) -> dict:
    """Field error and RMSD of one pair's result."""
    ev = evaluate(result.displacement, p["fl"], p["ml"])
    return {"field_err_mm": field_error(result.displacement, p["truth"], p["fm"])["field_err_mm"],
            "rmsd_mm": ev["rmsd_mm"], "dice_liver": ev["dice_liver"]}


def run_mode(mode: str, pairs: list[dict], n_single: int, key: jax.Array) -> dict:
    """Single-pair and batched timings and accuracy of one preset."""
    config = registration.PRESETS[mode]
    made = [registration.make_pair(p["f"], p["m"], **guidance(mode, p["fl"], p["ml"], p["fm"], p["mm"])) for p in pairs]
    single = []
    for p, pair in zip(pairs[:n_single], made):
        t, (res,) = timed_batch(config, [pair], key)
        single.append({"seed": p["seed"], **t, **accuracy(res, p)})
        print(json.dumps({"mode": mode, "single": single[-1]}), flush=True)
    batch = []
    for call in range(2):
        t, results = timed_batch(config, made, key)
        batch.append(t)
        print(json.dumps({"mode": mode, "batch": len(made), "call": call, **t}), flush=True)
    acc = [accuracy(r, p) for r, p in zip(results, pairs)]
    warm = [s["total_s"] for s in single[1:]]
    return {
        "mode": mode, "pairs": len(made),
        "single_cold_s": single[0]["total_s"], "single_warm_median_s": float(np.median(warm)) if warm else None,
        "batch_cold_s": batch[0]["total_s"], "batch_warm_s": batch[1]["total_s"],
        "batch_pairs_per_s": len(made) / batch[1]["total_s"], "batch_s_per_pair": batch[1]["total_s"] / len(made),
        "single_field_err_mm": float(np.mean([s["field_err_mm"] for s in single])),
        "batch_field_err_mm_same_seeds": float(np.mean([a["field_err_mm"] for a in acc[:n_single]])),
        "batch_field_err_mm": float(np.mean([a["field_err_mm"] for a in acc])),
        "batch_rmsd_mm": float(np.mean([a["rmsd_mm"] for a in acc])),
        "batch_min_dice_liver": float(np.min([a["dice_liver"] for a in acc])),
        "single": single, "batch_warm": batch[1], "batch_pairs": [{"seed": p["seed"], **a} for p, a in zip(pairs, acc)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1-32")
    ap.add_argument("--moving", default="diag_ct", choices=["diag_ct", "diag_mr"])
    ap.add_argument("--modes", default="cnn-guided,cnn-lm-guided")
    ap.add_argument("--single", type=int, default=4, help="pairs registered one at a time (the first compiles)")
    ap.add_argument("--size", default="full", choices=["small", "full"])
    ap.add_argument("--out", default="benchmarks/registration/results/batch")
    a = ap.parse_args()
    seeds = seed_range(a.seeds)
    meta = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "host": platform.node(), "size": a.size, "moving": a.moving, "seeds": a.seeds}
    print(json.dumps(meta), flush=True)
    t0 = time.perf_counter()
    pairs = load_pairs(seeds, a.moving, PhantomConfig.small() if a.size == "small" else PhantomConfig())
    print(json.dumps({"phantoms_s": time.perf_counter() - t0, "fixed_shape": pairs[0]["f"].shape}), flush=True)
    rows = [run_mode(mode, pairs, min(a.single, len(pairs)), jax.random.key(0)) for mode in a.modes.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"batch_{a.size}_{a.moving}.json").write_text(json.dumps({"meta": meta, "modes": rows}, indent=1))


if __name__ == "__main__":
    main()

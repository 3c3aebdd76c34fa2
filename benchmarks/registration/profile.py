"""Where a sirtjax registration spends its wall time: preparation, each level, finishing (one pair).

Runs the same registration twice in one process; the second call has every step compiled, so the
difference between the calls is compile time. Prints per-phase seconds and the accuracy.

    python benchmarks/registration/profile.py --mode cnn-guided --size small --seed 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import jax

from run import guidance
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.registration import register as reg
from sirtjax.registration.evaluate import evaluate


def timed_register(mode: str, f, m, kw: dict, key: int = 0) -> tuple[dict, object]:
    """One register() call with every phase timed (s, wall, results blocked on); ``key`` seeds its random samples."""
    config = reg.PRESETS[mode]
    t = {}
    t0 = time.perf_counter()
    pair = reg.make_pair(f, m, **kw)
    pyramids = reg.pair_pyramids([pair], config)
    levels = jax.block_until_ready(reg.prepare_levels([pair], config, pyramids))
    t["prepare_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    k1, k2 = jax.random.split(jax.random.key(key))
    affine, alogs = reg.run_affine(levels, reg.affine_start([pair], config), config, k1)
    jax.block_until_ready(affine)
    t["affine_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    weights = jax.tree.map(lambda w: w[None], config.weights())
    residual, stages = reg.run_nonrigid_stages([pair], levels, affine, weights, config, k2, pyramids=pyramids)
    jax.block_until_ready(residual)
    t["nonrigid_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    nlogs = [lg for _, lg in stages]
    res = reg.finish(pair, reg._take(affine, 0), reg._take(residual, 0),
                     [("affine", lg, 0) for lg in alogs] + [(name, lg, 0) for name, lg in stages])
    t["finish_s"] = time.perf_counter() - t3
    t["total_s"] = time.perf_counter() - t0
    t["levels"] = [{"level": lg.label, "iterations": int(lg.iterations[0]), "compile_s": round(lg.compile_s, 2),
                    "run_s": round(lg.run_s, 2), "per_iter_s": round(lg.run_s / max(int(lg.iterations[0]), 1), 4)}
                   for lg in alogs + nlogs]
    return t, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="cnn-guided")
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--moving", default="diag_ct")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--key", type=int, default=0, help="PRNG key of the random samples")
    a = ap.parse_args()
    study = generate_study(a.seed, PhantomConfig.small() if a.size == "small" else PhantomConfig())
    f, m = study.images["maa_ct"], study.images[a.moving]
    fl, ml = study.images["maa_ct_labels"], study.images[f"{a.moving}_labels"]
    kw = guidance(a.mode, fl, ml, study.images["maa_ct_liver"], study.images[f"{a.moving}_liver"])
    print("fixed", f.shape, "moving", m.shape, flush=True)
    for r in range(a.repeats):
        t, res = timed_register(a.mode, f, m, kw, a.key)
        ev = evaluate(res.displacement, fl, ml)
        t.update(call=r, rmsd_mm=round(ev["rmsd_mm"], 3), dice_liver=round(ev["dice_liver"], 4),
                 folding_liver=ev["folding_liver"])
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()}), flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

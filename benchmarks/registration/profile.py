"""Where a sirtjax registration spends its wall time: preparation, each level, finishing (one pair).

Runs the same registration twice in one process; the second call has every step compiled, so the
difference between the calls is compile time. Prints per-phase seconds and the accuracy.

    python benchmarks/registration/profile.py --mode cnn-guided --size small --seed 1
"""

from __future__ import annotations

import argparse
import json
import subprocess

import jax

from batch import timed_batch
from run import guidance
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax import registration
from sirtjax.registration.grid_search import evaluate


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
        t, (res,) = timed_batch(registration.PRESETS[a.mode], [registration.make_pair(f, m, **kw)], jax.random.key(a.key))
        ev = evaluate(res.displacement, fl, ml)
        t.update(call=r, rmsd_mm=round(ev["rmsd_mm"], 3), dice_liver=round(ev["dice_liver"], 4),
                 folding_liver=ev["folding_liver"])
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()}), flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

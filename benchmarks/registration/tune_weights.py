"""The thesis' weight tuning (5.3.4): RRMSD of every (w_I, w_S) of a guided mode over training studies.

Training studies are phantom seeds disjoint from the benchmark's (1-6 in ``run.py``); each case runs
:func:`sirtjax.registration.grid_search.grid_search` (affine once, every weight pair in one batched
non-rigid stage) and the table gives the RRMSD over the cases per weight pair, the affine-only
RRMSD (w_I = w_S = 0 leaves the field at rest) included.

    python benchmarks/registration/tune_weights.py --mode cnn-guided --seeds 101-108 \
        --out benchmarks/registration/results/tuning
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from run import guidance, seed_range
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.registration.grid_search import grid_search
from sirtjax.registration import PRESETS, make_pair


def parse_floats(text: str) -> list[float]:
    """'0,0.1,1' -> [0.0, 0.1, 1.0]."""
    return [float(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="cnn-guided", choices=["cnn-guided", "cnn-lm-guided"])
    ap.add_argument("--seeds", default="101-108")
    ap.add_argument("--moving", default="diag_ct,diag_mr")
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--w-image", default="0,0.1,0.3,1")
    ap.add_argument("--w-seg", default="0,0.3,1,3")
    ap.add_argument("--out", default="benchmarks/registration/results/tuning")
    a = ap.parse_args()
    seeds = seed_range(a.seeds)
    wi, ws = parse_floats(a.w_image), parse_floats(a.w_seg)
    config = PRESETS[a.mode]
    phantom = PhantomConfig.small() if a.size == "small" else PhantomConfig()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rmsd = {mv: [] for mv in a.moving.split(",")}
    for seed in seeds:
        study = generate_study(seed, phantom)
        for mv in rmsd:
            im = study.images
            fl, ml = im["maa_ct_labels"], im[f"{mv}_labels"]
            pair = make_pair(im["maa_ct"], im[mv], **guidance(a.mode, fl, ml, im["maa_ct_liver"], im[f"{mv}_liver"]))
            r = grid_search([pair], [fl], [ml], wi, ws, config)
            rmsd[mv].append(r["rmsd_mm"][..., 0])
            print(json.dumps({"seed": seed, "moving": mv, "rmsd_mm": np.round(r["rmsd_mm"][..., 0], 3).tolist()}), flush=True)
    lines = [f"# {a.mode}, {a.size} phantom, seeds {a.seeds}: RRMSD (mm) per (w_I row, w_S column), w_R = {config.main_stage.w_reg:g}", ""]
    for mv, per_case in rmsd.items():
        rr = np.sqrt(np.mean(np.stack(per_case, axis=-1) ** 2, axis=-1))
        bi, bj = np.unravel_index(np.argmin(rr), rr.shape)
        lines += [f"## {mv}: best w_I = {wi[bi]:g}, w_S = {ws[bj]:g} ({rr[bi, bj]:.2f} mm)", "",
                  "| w_I \\ w_S | " + " | ".join(f"{v:g}" for v in ws) + " |", "|---" * (len(ws) + 1) + "|"]
        lines += [f"| {wi[i]:g} | " + " | ".join(f"{rr[i, j]:.2f}" for j in range(len(ws))) + " |" for i in range(len(wi))]
        lines.append("")
    text = "\n".join(lines)
    (out / f"{a.mode}_{a.size}_{a.seeds}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Liver DSC of a segmentation model on phantom studies (seeds it never saw), all four anatomical images.

    python benchmarks/segmentation/eval_model.py [--model liver] [--seeds 300,301,302]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sirtjax.metrics import dice
from sirtjax.models import load_model
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.segmentation import segment_liver

IMAGES = (("maa_ct", "ct"), ("diag_ct", "ct"), ("y90_ct", "ct"), ("diag_mr", "mr"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="liver")
    ap.add_argument("--seeds", default="300,301,302")
    args = ap.parse_args()
    model, spec = load_model(args.model)
    print(f"model {args.model}: {spec.get('arch')} features {spec.get('features')}; load average {os.getloadavg()[0]:.1f}\n")
    print("| seed | " + " | ".join(n for n, _ in IMAGES) + " |")
    print("|---|" + "---|" * len(IMAGES))
    scores = {n: [] for n, _ in IMAGES}
    seconds = []
    for seed in (int(s) for s in args.seeds.split(",")):
        study = generate_study(seed, PhantomConfig())
        row = []
        for name, modality in IMAGES:
            t = time.perf_counter()
            mask = segment_liver(model, spec, study.images[name], modality=modality)
            seconds.append(time.perf_counter() - t)
            scores[name].append(dice(np.asarray(mask.array), np.asarray(study.images[name + "_liver"].array)))
            row.append(f"{scores[name][-1]:.3f}")
        print(f"| {seed} | " + " | ".join(row) + " |", flush=True)
    print("| mean | " + " | ".join(f"{np.mean(v):.3f}" for v in scores.values()) + " |")
    print(f"\nsegment_liver wall time per image: median {np.median(seconds):.1f} s (first includes compilation)")


if __name__ == "__main__":
    main()

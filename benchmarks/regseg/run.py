"""The liver on the non-contrast MAA CT from the diagnostic contrast CT and its liver mask: the joint
registration-segmentation network (paper 004) against the iterative cnn-guided registration, the liver U-Net
alone and elastix, on phantom studies of seeds that no training or validation uses (no config in configs/ uses 300-305).

Methods, each scored on the MAA CT's own grid against the phantom's liver (DSC, ASSD and HD95, mm):
- (a) ``regseg``: the shipped network (`sirtjax.segmentation.regseg`), pre-alignment included;
- ``affine``: the same pipeline with an untrained network (zero field): what the image-based pre-alignment alone gives;
- (b) ``cnn-guided``: the liver U-Net on the MAA CT, then the iterative cnn-guided registration of the contrast CT
  with both liver masks (what ``sirtjax plan`` does), the reference mask warped by its field;
- (c) ``unet``: the liver U-Net on the MAA CT alone;
- (d) ``elastix``: itk-elastix's default affine + B-spline maps, started from the mask-moment alignment (the U-Net's
  MAA CT mask and the reference mask, as ``benchmarks/registration/run.py``), the reference mask warped by transformix.

Times are wall seconds on this machine: ``first`` is the first case in the process (compiling included, for the
sirtjax methods), ``warm`` the median of the others. Then the network's throughput on a batch of all the pairs
in one call (one batched pre-alignment, one vmapped network call).

    python benchmarks/regseg/run.py --seeds 300-305 --out benchmarks/regseg/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registration"))

from run import run_elastix, seed_range  # noqa: E402 (benchmarks/registration/run.py)

METHODS = ("regseg", "affine", "cnn-guided", "unet", "elastix")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="300-305")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--model", default="regseg")
    ap.add_argument("--out", default="benchmarks/regseg/results")
    a = ap.parse_args()
    import jax

    from sirtjax.metrics import assd, dice, hausdorff95
    from flax import nnx

    from sirtjax.models import load_model
    from sirtjax.models.store import build_model
    from sirtjax.phantom import generate_study
    from sirtjax.registration import PRESETS, register
    from sirtjax.segmentation import segment_liver
    from sirtjax.segmentation.regseg import carry_mask, regseg_batch

    methods = a.methods.split(",")
    seeds = seed_range(a.seeds)
    unet, unet_spec = load_model("liver")
    net, net_spec = load_model(a.model)
    identity = build_model(net_spec, rngs=nnx.Rngs(params=0))  # every cascade starts as the zero field
    studies = {s: generate_study(s).images for s in seeds}

    def run(method, im):
        fixed, moving, moving_liver = im["maa_ct"], im["diag_ct"], im["diag_ct_liver"]
        if method in ("regseg", "affine"):
            model = net if method == "regseg" else identity
            return np.asarray(regseg_batch(model, net_spec, [(fixed, moving, moving_liver)])[0].mask.array)
        fixed_liver = segment_liver(unet, unet_spec, fixed, modality="ct")
        if method == "unet":
            return np.asarray(fixed_liver.array)
        if method == "cnn-guided":
            res = register(fixed, moving, fixed_mask=fixed_liver, moving_mask=moving_liver, config=PRESETS["cnn-guided"])
            return np.asarray(carry_mask(moving_liver, res.displacement).array)
        if method == "elastix":
            _, warped, _ = run_elastix(fixed, moving, fixed_liver, moving_liver, moving_liver)
            return np.asarray(warped.array)
        raise SystemExit(f"unknown method {method}")

    rows = []
    for method in methods:
        for i, s in enumerate(seeds):
            im = studies[s]
            t0 = time.perf_counter()
            mask = run(method, im)
            wall = time.perf_counter() - t0
            truth, sp = np.asarray(im["maa_ct_liver"].array) > 0, im["maa_ct"].spacing_mm
            row = {"method": method, "seed": s, "dice": dice(mask > 0, truth), "assd_mm": assd(mask > 0, truth, spacing_mm=sp),
                   "hd95_mm": hausdorff95(mask > 0, truth, spacing_mm=sp), "wall_s": wall, "first": i == 0}
            rows.append(row)
            print(json.dumps(row), flush=True)

    batch = [(studies[s]["maa_ct"], studies[s]["diag_ct"], studies[s]["diag_ct_liver"]) for s in seeds]
    regseg_batch(net, net_spec, batch)  # compile the batch shapes
    t0 = time.perf_counter()
    regseg_batch(net, net_spec, batch)
    batch_s = time.perf_counter() - t0

    lines = [
        f"device: {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} CPUs); seeds {a.seeds}; network: {a.model} "
        f"({net_spec.get('features')}, {net_spec.get('cascades')} cascades at {net_spec.get('spacing_mm')} mm, val DSC "
        f"{net_spec.get('val_dice', '-')}); {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| method | liver DSC mean (min) | ASSD mm mean (max) | HD95 mm mean (max) | first case s | warm s per case (median) |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        r = [x for x in rows if x["method"] == method]
        d, s_, h = (np.array([x[k] for x in r]) for k in ("dice", "assd_mm", "hd95_mm"))
        warm = [x["wall_s"] for x in r if not x["first"]]
        lines.append(f"| {method} | {d.mean():.3f} ({d.min():.3f}) | {s_.mean():.2f} ({s_.max():.2f}) | {h.mean():.1f} ({h.max():.1f}) | "
                     f"{r[0]['wall_s']:.1f} | {np.median(warm) if warm else float('nan'):.1f} |")
    lines += ["", f"regseg on a batch of {len(batch)} pairs in one call (batched pre-alignment, one vmapped network call), warm: "
              f"{batch_s:.1f} s, {len(batch) / batch_s:.2f} pairs/s"]
    text = "\n".join(lines)
    print("\n" + text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

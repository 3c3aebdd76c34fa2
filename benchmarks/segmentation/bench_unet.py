"""Thesis liver U-Net speed: inference on 189x162x162 (thesis: 17 s Xeon CPU, 1 s P100), training
throughput (patches/s and voxels/s), peak memory. Writes a markdown table to stdout.

    python benchmarks/segmentation/bench_unet.py [--features 4,8,16,32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sirtjax.models import thesis_liver_unet
from sirtjax.train.step import init_opt_state, make_optimizers, make_train_step


def timed(fn, repeats):
    """(first call s (compile + run), best of `repeats` later calls s)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="4,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-patch-out", type=int, default=28)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--norm", default=None, help="'instance' for the normalised variant (the shipped phantom model)")
    ap.add_argument("--skip-full-volume", action="store_true", help="skip the full-volume training step (minutes, ~11 GiB)")
    args = ap.parse_args()
    features = tuple(int(f) for f in args.features.split(","))
    model = thesis_liver_unet(features=features, norm=args.norm, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    forward = jax.jit(lambda p, x: jax.nn.sigmoid(nnx.merge(graphdef, p)(x)))
    x = jax.random.normal(jax.random.key(0), (1, 189, 162, 162, 1))
    inf_first, inf_best = timed(lambda: forward(params, x), args.repeats)

    adam, plateau = make_optimizers(1e-3, factor=0.2, patience=2, min_scale=1e-3)
    opt_state = init_opt_state(adam, plateau, params)
    step = make_train_step(graphdef, 1e-3, "dice_ce")
    in_patch = model.input_shape_for((args.train_patch_out,) * 3)
    out_patch = model.output_shape(in_patch)
    xb = jax.random.normal(jax.random.key(1), (args.batch, *in_patch, 1))
    yb = (jax.random.uniform(jax.random.key(2), (args.batch, *out_patch, 1)) > 0.5).astype(jnp.float32)
    tr_first, tr_best = timed(lambda: step(params, opt_state, xb, yb)[2]["loss"], args.repeats)
    if not args.skip_full_volume:
        xf = jax.random.normal(jax.random.key(3), (1, 189, 162, 162, 1))
        yf = (jax.random.uniform(jax.random.key(4), (1, 163, 136, 136, 1)) > 0.5).astype(jnp.float32)
        full_first, full_best = timed(lambda: step(params, opt_state, xf, yf)[2]["loss"], max(1, args.repeats - 2))

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    dev = jax.devices()[0]
    load = os.getloadavg()
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', '')}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; jax {jax.__version__}")
    print(f"model: thesis_liver_unet features {features}, norm {args.norm}, {n_params} parameters ({4 * n_params / 2**20:.2f} MiB float32)\n")
    print("| measurement | first call (compile + run) s | steady s | rate |")
    print("|---|---|---|---|")
    print(f"| inference 189x162x162 -> 163x136x136, batch 1 | {inf_first:.1f} | {inf_best:.2f} | thesis: 17 s Xeon CPU, 1 s P100 |")
    print(f"| train step, batch {args.batch} patches {in_patch} -> {out_patch} | {tr_first:.1f} | {tr_best:.2f} | "
          f"{args.batch / tr_best:.2f} patches/s |")
    if not args.skip_full_volume:
        print(f"| train step, 1 full 189x162x162 volume | {full_first:.1f} | {full_best:.2f} | {1 / full_best:.3f} volumes/s |")
    print(f"\npeak host memory (max RSS): {peak_gib:.2f} GiB")
    if dev.platform == "gpu":
        stats = dev.memory_stats() or {}
        print(f"peak device memory: {stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()

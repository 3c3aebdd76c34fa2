"""Time phantom study generation (default and small presets), per stage, and writing to disk.

Usage (repository root): nice -n 5 python benchmarks/phantom/bench_generate.py [--seeds 0 1 2]
Prints a markdown table; the first call of a process includes JAX compilation of the posture
maps (reported separately as "cold").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from sirtjax.phantom import PhantomConfig, generate_study, write_study


def _timed(seed: int, config: PhantomConfig) -> tuple[float, float, dict[str, float]]:
    stages: dict[str, float] = {}
    last = [time.perf_counter(), "start"]

    def progress(stage: str) -> None:
        now = time.perf_counter()
        stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
        last[:] = [now, stage]

    t0, c0 = time.perf_counter(), time.process_time()
    study = generate_study(seed, config, progress=progress)
    progress("end")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_study(study, os.path.join(tmp, "study"))
        stages["write_study"] = time.perf_counter() - t1
    stages.pop("start", None)
    return wall, cpu, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2-core machine)\n")
    print("| preset | seed | run | wall s | CPU s | slowest stages (s) |")
    print("|---|---|---|---|---|---|")
    for name, config in (("small", PhantomConfig.small()), ("default", PhantomConfig())):
        for i, seed in enumerate(args.seeds):
            wall, cpu, stages = _timed(seed, config)
            top = sorted(stages.items(), key=lambda kv: -kv[1])[:4]
            run = "cold" if (name == "small" and i == 0) else "warm"
            print(f"| {name} | {seed} | {run} | {wall:.2f} | {cpu:.2f} | " + ", ".join(f"{k} {v:.2f}" for k, v in top) + " |")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

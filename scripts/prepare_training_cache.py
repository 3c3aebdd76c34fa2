"""Fill a training run's cache/ in parallel: the prepared phantom cases (or regseg pairs) and the synthetic generator's maps.

`sirtjax train` makes the same files one seed (or pair) at a time when they are missing; on a many-core
machine this script makes them in parallel first (one process per seed or pair), so the accelerator does
not wait. Usage: python scripts/prepare_training_cache.py CONFIG RUN_DIR [--workers N]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
from pathlib import Path


def _real(args: tuple) -> str:
    cfg, cache = args
    from sirtjax.train.loop import load_cases

    train, val = load_cases(cfg, Path(cache))
    return ", ".join(c.name for c in train + val)


def _synth(args: tuple) -> str:
    seed, options, cache = args
    from sirtjax.train.label_maps import phantom_patient

    phantom_patient(seed, options, Path(cache))
    return f"seed {seed}: synthetic maps"


def _pair(args: tuple) -> str:
    pair, spacing, shape, cache = args
    from sirtjax.train.regseg_data import phantom_pairs

    phantom_pairs([pair], spacing, shape, Path(cache))
    return f"pair {pair[0]} <- {pair[1]}"


def regseg_jobs(raw: dict, config: Path, cache: str) -> list[tuple]:
    """The jobs of a regseg config: every training and validation pair, and every synthetic map."""
    from sirtjax.train.regseg import parse_regseg_config
    from sirtjax.train.regseg_data import pair_seeds

    cfg = parse_regseg_config(raw, str(config))
    pairs = pair_seeds(cfg.train_seeds, cfg.inter_offsets) + [(s, s) for s in cfg.val_seeds]
    jobs = [(_pair, (p, cfg.spacing_mm, tuple(cfg.model["grid_zyx"]), cache)) for p in pairs]
    synth = cfg.batch_size > cfg.n_phantom
    return jobs + [(_synth, (s, {}, cache)) for s in cfg.synth_seeds if synth]


def real_and_synth_jobs(cfg, cache: str) -> list[tuple]:
    """The jobs of a segmentation config: every training and validation seed's cases, and every synthetic map.

    A seed's job loads the config's cases of that seed alone as `sirtjax train` loads them (target, noise matching),
    so the cache holds the files the run will read. The noisier renderings of `data.noisy_ct` spread their levels
    over all the seeds, so they are left to `sirtjax train` (5 s a study)."""
    d = {k: v for k, v in cfg.data.items() if k != "noisy_ct"}
    one = lambda train, val: dataclasses.replace(cfg, data={**d, "train_seeds": train, "val_seeds": val})  # noqa: E731
    jobs = [(_real, (one([s], []), cache)) for s in d["train_seeds"]] + [(_real, (one([], [s]), cache)) for s in d["val_seeds"]]
    if cfg.synth is not None:
        v = cfg.synth.variants
        jobs += [(_synth, (s, v[i % len(v)], cache)) for i, s in enumerate(cfg.synth.seeds)]
    return jobs


def main() -> None:
    """Parse the arguments and prepare every case of the config in a process pool."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--workers", type=int, default=mp.cpu_count())
    a = p.parse_args()
    from sirtjax.train import load_config
    from sirtjax.train.config import is_regseg_config, read_json_config

    cache = str(a.run_dir / "cache")
    raw = read_json_config(a.config)
    if is_regseg_config(raw):
        jobs = regseg_jobs(raw, a.config, cache)
    else:
        jobs = real_and_synth_jobs(load_config(a.config), cache)
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for line in pool.imap_unordered(_call, jobs):
            print(line, flush=True)


def _call(job: tuple) -> str:
    """Run one job on the CPU: the rendering needs no accelerator, and many processes cannot share one."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    fn, args = job
    return fn(args)


if __name__ == "__main__":
    main()

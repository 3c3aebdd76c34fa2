"""Summarise rows_*.csv of run.py into a markdown table: RRMSD, kept-back landmark MCD, liver Dice, folding, field error,
time per method.

Failed runs (a non-empty ``error``) count as failures and are left out of the accuracy columns.
Several CSV files are read as one table (runs of different methods on the same pairs). ``--paired A,B``
adds a second table comparing two methods pair by pair (same seed and moving image).

    python benchmarks/registration/summarise.py ROWS.csv [MORE_ROWS.csv ...] [--methods a,b] [--paired a,b]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np


def _num(r: dict, key: str) -> float:
    v = r.get(key) or ""
    return float(v) if v not in ("", "nan") else float("nan")


def main(paths: list[str], methods: set[str] | None = None, paired: tuple[str, str] | None = None) -> None:
    rows = []
    for path in paths:
        with open(path, newline="") as fh:
            rows += [r for r in csv.DictReader(fh) if methods is None or r["method"] in methods]
    method_table(rows)
    if paired:
        paired_table(rows, *paired)


def method_table(rows: list[dict]) -> None:
    """One markdown row per (moving image, method): accuracy over its pairs and median times (sirtjax: wall, wall after
    compiling, the level steps' run time, and compile time: every program's where recorded, else the level steps')."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["moving"], r["method"])].append(r)
    print("| moving -> maa_ct | method | pairs ok | RRMSD mm | max RMSD mm | mean kept-back MCD mm | mean liver Dice | "
          "min liver Dice | max liver folding | mean liver field error mm | max p90 liver field error mm | median wall s | "
          "median wall after compile s | median level steps s | median compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mv, method), rs in sorted(groups.items()):
        ok = [r for r in rs if not r.get("error")]
        rm = np.asarray([_num(r, "rmsd_mm") for r in ok])
        dice = np.asarray([_num(r, "dice_liver") for r in ok])
        fold, ferr, fp90, wall, run, kept = (_finite(ok, key) for key in (
            "folding_liver", "field_err_mm", "field_err_p90_mm", "wall_s", "run_s", "kept_back_mcd_mm"))
        comp = [_compile_s(r) for r in ok if r.get("compile_s")]
        warm = [_num(r, "wall_s") - _compile_s(r) for r in ok if r.get("compile_s")]
        fmt = lambda xs, spec: format(np.median(xs), spec) if len(xs) else ""  # noqa: E731
        print(f"| {mv} | {method} | {len(ok)}/{len(rs)} | "
              f"{(f'{np.sqrt(np.mean(rm ** 2)):.2f}' if rm.size else '')} | {(f'{rm.max():.2f}' if rm.size else '')} | "
              f"{(f'{np.mean(kept):.2f}' if kept else 'n/a')} | "
              f"{(f'{dice.mean():.3f}' if dice.size else '')} | {(f'{dice.min():.3f}' if dice.size else '')} | "
              f"{(f'{100 * max(fold):.3f} %' if fold else 'n/a')} | {(f'{np.mean(ferr):.2f}' if ferr else 'n/a')} | "
              f"{(f'{max(fp90):.2f}' if fp90 else 'n/a')} | {fmt(wall, '.1f')} | {fmt(warm, '.2f')} | {fmt(run, '.2f')} | "
              f"{fmt(comp, '.1f')} |")


def _finite(rows: list[dict], key: str) -> list[float]:
    """The finite values of one column."""
    return [v for v in (_num(r, key) for r in rows) if np.isfinite(v)]


def _compile_s(row: dict) -> float:
    """A row's compile time: every program's (compile_all_s) where recorded, else its level steps' (compile_s), else 0."""
    for key in ("compile_all_s", "compile_s"):
        if row.get(key):
            return _num(row, key)
    return 0.0


def _mean_ci(d: np.ndarray, resamples: int = 10000) -> tuple[float, float, float]:
    """Mean of d and its 95 % bootstrap interval (resampling the pairs; fixed seed, so reruns agree)."""
    idx = np.random.default_rng(0).integers(0, d.size, (resamples, d.size))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def paired_table(rows: list[dict], a: str, b: str) -> None:
    """Method a against b on the pairs both finished: mean difference a - b of RMSD, of the kept-back landmarks'
    MCD (where scored) and of liver field error (mm; negative: a is closer) with 95 % bootstrap intervals, how many pairs a is closer, and the median
    ratio of b's wall time to a's time after compiling (wall - compile; a process compiles on its first pairs)."""
    ok = {(r["moving"], r["seed"], r["method"]): r for r in rows if not r.get("error")}
    metrics = ("rmsd_mm", "kept_back_mcd_mm", "field_err_mm") if any(_finite(rows, "kept_back_mcd_mm")) else (
        "rmsd_mm", "field_err_mm")
    print("\n| moving -> maa_ct | pairs | "
          + " | ".join(f"{a} - {b}: {m} (95 % CI) | {a} closer" for m in metrics)
          + f" | median {b} wall / {a} wall after compile |")
    print("| --- | --- | " + "--- | --- | " * len(metrics) + "--- |")
    for mv in sorted({k[0] for k in ok}):
        keys = sorted({k[1] for k in ok if k[0] == mv and (mv, k[1], a) in ok and (mv, k[1], b) in ok}, key=int)
        if not keys:
            continue
        ra, rb = [ok[(mv, s, a)] for s in keys], [ok[(mv, s, b)] for s in keys]
        cells = []
        for metric in metrics:
            d = np.asarray([_num(x, metric) - _num(y, metric) for x, y in zip(ra, rb)])
            m, lo, hi = _mean_ci(d)
            cells += [f"{m:+.2f} ({lo:+.2f} to {hi:+.2f})", f"{int((d < 0).sum())}/{d.size}"]
        ratio = [_num(y, "wall_s") / (_num(x, "wall_s") - _compile_s(x)) for x, y in zip(ra, rb)]
        print(f"| {mv} | {len(keys)} | {' | '.join(cells)} | {np.median(ratio):.1f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="*", default=[str(Path(__file__).parent / "results" / "rows_small.csv")])
    ap.add_argument("--methods", help="comma-separated methods to keep (default: all)")
    ap.add_argument("--paired", help="A,B: compare two methods pair by pair")
    a = ap.parse_args()
    main(a.rows, None if a.methods is None else set(a.methods.split(",")), tuple(a.paired.split(",")) if a.paired else None)

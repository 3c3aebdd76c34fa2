"""Summarise rows_*.csv of run.py into a markdown table: RRMSD, liver Dice, folding, field error, time per method.

Failed runs (a non-empty ``error``) count as failures and are left out of the accuracy columns.
Several CSV files are read as one table (runs of different methods on the same pairs).

    python benchmarks/registration/summarise.py ROWS.csv [MORE_ROWS.csv ...] [--methods a,b]
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


def main(paths: list[str], methods: set[str] | None = None) -> None:
    rows = []
    for path in paths:
        with open(path, newline="") as fh:
            rows += [r for r in csv.DictReader(fh) if methods is None or r["method"] in methods]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["moving"], r["method"])].append(r)
    print("| moving -> maa_ct | method | pairs ok | RRMSD mm | max RMSD mm | mean liver Dice | min liver Dice | "
          "max liver folding | mean liver field error mm | max p90 liver field error mm | median wall s | "
          "median run s (after compile) | median compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mv, method), rs in sorted(groups.items()):
        ok = [r for r in rs if not r.get("error")]
        rm = np.asarray([_num(r, "rmsd_mm") for r in ok])
        dice = np.asarray([_num(r, "dice_liver") for r in ok])
        fold = [_num(r, "folding_liver") for r in ok if np.isfinite(_num(r, "folding_liver"))]
        ferr = [_num(r, "field_err_mm") for r in ok if np.isfinite(_num(r, "field_err_mm"))]
        fp90 = [_num(r, "field_err_p90_mm") for r in ok if np.isfinite(_num(r, "field_err_p90_mm"))]
        wall = [_num(r, "wall_s") for r in ok if np.isfinite(_num(r, "wall_s"))]
        run = [_num(r, "run_s") for r in ok if np.isfinite(_num(r, "run_s"))]
        comp = [_num(r, "compile_s") for r in ok if np.isfinite(_num(r, "compile_s"))]
        fmt = lambda xs, spec: format(np.median(xs), spec) if len(xs) else ""  # noqa: E731
        print(f"| {mv} | {method} | {len(ok)}/{len(rs)} | "
              f"{(f'{np.sqrt(np.mean(rm ** 2)):.2f}' if rm.size else '')} | {(f'{rm.max():.2f}' if rm.size else '')} | "
              f"{(f'{dice.mean():.3f}' if dice.size else '')} | {(f'{dice.min():.3f}' if dice.size else '')} | "
              f"{(f'{100 * max(fold):.3f} %' if fold else 'n/a')} | {(f'{np.mean(ferr):.2f}' if ferr else 'n/a')} | "
              f"{(f'{max(fp90):.2f}' if fp90 else 'n/a')} | {fmt(wall, '.1f')} | {fmt(run, '.1f')} | {fmt(comp, '.1f')} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="*", default=[str(Path(__file__).parent / "results" / "rows_small.csv")])
    ap.add_argument("--methods", help="comma-separated methods to keep (default: all)")
    a = ap.parse_args()
    main(a.rows, None if a.methods is None else set(a.methods.split(",")))

"""Summarise rows_*.csv of run.py into a markdown table: RRMSD, mean liver Dice, folding, time per method."""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(path: str) -> None:
    rows = list(csv.DictReader(open(path)))
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["moving"], r["method"])].append(r)
    print("| moving -> maa_ct | method | pairs | RRMSD mm | mean liver Dice | max liver folding | median wall s | median run s (sirtjax, after compile) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (mv, method), rs in sorted(groups.items()):
        rm = np.asarray([float(r["rmsd_mm"]) for r in rs])
        dice = np.mean([float(r["dice_liver"]) for r in rs])
        fold = [float(r["folding_liver"]) for r in rs if r["folding_liver"] not in ("", "nan")]
        wall = np.median([float(r["wall_s"]) for r in rs])
        run = [float(r["run_s"]) for r in rs if r.get("run_s")]
        print(f"| {mv} | {method} | {len(rs)} | {np.sqrt(np.mean(rm ** 2)):.2f} | {dice:.3f} | "
              f"{(f'{100 * max(fold):.3f} %' if fold else 'n/a')} | {wall:.1f} | {(f'{np.median(run):.1f}' if run else '')} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "results" / "rows_small.csv"))

"""Wall time of ``sirtjax register`` from an empty cache, then warm: what a user waits for per call.

Writes the 3 mm phantom studies of the given seeds, empties a cache folder (``SIRTJAX_CACHE_DIR``),
then runs the CLI (cnn-guided, liver masks) on the first seed ``--runs`` times and once on each
further seed (another patient on the now warm cache). Per call: the process wall time and, from
report.json, the time inside the command, the level steps' compile (trace, export or load) and
the optimisation.

    python benchmarks/registration/cli_start.py --seeds 2,3 --runs 3 --out benchmarks/registration/results/round5_cli
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def register_once(study: Path, out: Path, env: dict) -> dict:
    """One ``sirtjax register`` call (diag CT -> MAA CT, cnn-guided); wall and report times (s), folding (%)."""
    cmd = [sys.executable, "-m", "sirtjax", "register", str(study / "maa_ct.nii.gz"), str(study / "diag_ct.nii.gz"),
           "--fixed-mask", str(study / "maa_ct_liver.nii.gz"), "--moving-mask", str(study / "diag_ct_liver.nii.gz"),
           "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 2), "command_s": round(report["total_s"], 2),
            "compile_s": round(report["compile_s"], 2), "optimise_s": round(report["optimise_s"], 2),
            "folding_pct": round(100 * report["jacobian"]["fraction_nonpositive"], 3),
            "folding_liver_pct": round(100 * report["jacobian_liver"]["fraction_nonpositive"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="2,3")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/registration/results/cli")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, SIRTJAX_CACHE_DIR=str(tmp / "cache"))
        for seed in seeds:
            subprocess.run([sys.executable, "-m", "sirtjax", "phantom", str(tmp / f"s{seed}"), "--seed", str(seed)],
                           env=env, check=True, capture_output=True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        calls = [(seeds[0], "empty cache" if i == 0 else "same pair, warm") for i in range(a.runs)]
        calls += [(s, "other patient, warm") for s in seeds[1:]]
        for i, (seed, state) in enumerate(calls):
            row = {"seed": seed, "cache": state, **register_once(tmp / f"s{seed}", tmp / f"out{i}", env)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(out / "cli_start.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

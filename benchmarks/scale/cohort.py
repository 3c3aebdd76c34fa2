"""Cohort throughput on this machine: `sirtjax cohort` against ANTs SyN one pair at a time, and a kill and resume.

Cases: phantom seeds ``--seeds``, four 3 mm pairs each, every one guided by liver masks (cnn-guided): the MAA CT and
the 90Y CT as fixed images, the diagnostic CT and MR as moving images. Every sirtjax number is the wall time of the
``sirtjax cohort`` command as a user runs it, start-up included:

- the batch-size sweep: the first ``--sweep`` cases at each ``--batch-sizes``, with a program cache filled by an
  earlier run (warm), and the first of them again with an empty cache (cold: every program compiled);
- ANTs SyN (benchmarks/registration/run.py's ``run_ants``) on the first ``--ants`` cases, one after another in this
  process, as a user's loop would run them;
- the first ``--cases`` cases as one cohort at ``--full-batch`` (the command's default batch size), with the warm
  cache, killed (SIGKILL) once ``--kill-after`` cases are written, then resumed: its throughput is the cases over
  both commands' wall time, against ANTs SyN's pairs a second.

The warm cache is filled by the last 16 cases (other patients than the first ``--cases``) at each batch size.

Accuracy: the liver Dice of the moving liver mask warped onto the fixed image (sirtjax: the nearest-neighbour warp
by the cohort's field; ANTs: its own transforms).

    python benchmarks/scale/cohort.py --seeds 1-10 --batch-sizes 4,8 --ants 8 --cases 24 --kill-after 10 \
        --work runs/scale --out benchmarks/scale/results
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registration"))
from run import run_ants, seed_range  # noqa: E402

from sirtjax.io import read_volume  # noqa: E402
from sirtjax.metrics import dice  # noqa: E402
from sirtjax.registration.warp import warp_volume  # noqa: E402

PAIRS = (("maa_ct", "diag_ct"), ("maa_ct", "diag_mr"), ("y90_ct", "diag_ct"), ("y90_ct", "diag_mr"))


def make_study(seed: int, folder: Path) -> Path:
    """Phantom study ``seed`` written under folder (kept when it is there already)."""
    from sirtjax.phantom import PhantomConfig, generate_study, write_study

    study = folder / f"seed{seed:03d}"
    if not (study / "study.json").exists():
        write_study(generate_study(seed, PhantomConfig()), study)
    return study


def pair_rows(studies: list[Path]) -> list[dict]:
    """The cohort's manifest rows: four pairs per study."""
    return [{"id": f"{s.name}_{f}_{m}", "fixed": str(s / f"{f}.nii.gz"), "moving": str(s / f"{m}.nii.gz"),
             "fixed_mask": str(s / f"{f}_liver.nii.gz"), "moving_mask": str(s / f"{m}_liver.nii.gz")}
            for s in studies for f, m in PAIRS]


def write_manifest(rows: list[dict], path: Path) -> Path:
    """A manifest CSV of rows."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def cohort(manifest: Path, out: Path, batch_size: int, cache: Path, kill_after: int | None = None) -> dict:
    """Run `sirtjax cohort` (a fresh output folder); wall seconds, and whether it was killed."""
    env = dict(os.environ, SIRTJAX_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "sirtjax", "cohort", str(manifest), "-o", str(out), "--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    while proc.poll() is None:
        time.sleep(0.5)
        if kill_after is not None and written(out) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            killed = True
            proc.wait()
    stdout, stderr = proc.communicate()
    if proc.returncode != 0 and not killed:
        raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-2000:]}")
    return {"wall_s": time.perf_counter() - t0, "killed": killed, "stdout": stdout.strip()}


def liver_dice(row: dict, out: Path) -> float:
    """Dice of the moving liver warped by the cohort's field against the fixed liver."""
    field = read_volume(out / row["id"] / "displacement.nii.gz", vector=True)
    warped = warp_volume(read_volume(row["moving_mask"]), field, order=0)
    return dice(np.asarray(warped.array) > 0, np.asarray(read_volume(row["fixed_mask"]).array) > 0)


def written(out: Path) -> int:
    """Cases whose folders are published (staging folders start with a dot)."""
    return sum((p / "case.json").exists() for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else 0


def batch_compile_s(rows: list[dict], out: Path) -> float:
    """Mean over the cases of the compile (and program-load) seconds their reports charge: a batch's, as every
    case of a batch reports its batch's."""
    return float(np.mean([json.loads((out / r["id"] / "report.json").read_text())["compile_s"] for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-25")
    parser.add_argument("--sweep", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--ants", type=int, default=4)
    parser.add_argument("--cases", type=int, default=24, help="cases of the cohort that is killed once and resumed")
    parser.add_argument("--full-batch", type=int, default=8)
    parser.add_argument("--kill-after", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path("runs/scale"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/scale/results"))
    args = parser.parse_args()
    args.work = args.work.resolve()  # the manifests' paths must not depend on the folder a cohort runs from
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = seed_range(args.seeds)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        studies = list(pool.map(make_study, seeds, [args.work / "studies"] * len(seeds)))
    phantom_s = time.perf_counter() - t0
    rows = pair_rows(studies)
    if len(rows) < args.cases + 16:
        parser.error(f"{len(rows)} cases: the cohort's {args.cases} and 16 others to warm the cache need more seeds")
    write_manifest(rows, args.work / "manifest.csv")
    sweep_rows = rows[: args.sweep]
    write_manifest(sweep_rows, args.work / "sweep.csv")
    write_manifest(rows[-16:], args.work / "warmup.csv")  # other patients' pairs fill the warm cache
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_average_start": os.getloadavg(), "phantom_s": phantom_s, "cases": len(rows), "sweep": []}
    cold_cache, warm_cache = args.work / "cache_cold", args.work / "cache_warm"
    shutil.rmtree(cold_cache, ignore_errors=True)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    for b in sorted({*sizes, args.full_batch}):  # fill the warm cache with this batch size's programs
        shutil.rmtree(args.work / "warmup", ignore_errors=True)
        cohort(args.work / "warmup.csv", args.work / "warmup", b, warm_cache)
    for b, cache in [(sizes[-1], cold_cache)] + [(b, warm_cache) for b in sizes]:
        out = args.work / f"sweep_b{b}_{cache.name}"
        shutil.rmtree(out, ignore_errors=True)
        run = cohort(args.work / "sweep.csv", out, b, cache)
        dices = [liver_dice(r, out) for r in sweep_rows]
        result["sweep"].append({"batch": b, "cache": cache.name.split("_")[1], "wall_s": run["wall_s"],
                                "pairs_per_s": len(sweep_rows) / run["wall_s"], "batch_compile_s": batch_compile_s(sweep_rows, out),
                                "liver_dice_mean": float(np.mean(dices)), "liver_dice_min": float(np.min(dices))})
        print(result["sweep"][-1], flush=True)
    ants = []
    for r in rows[: args.ants]:
        f, m, fm, mm = (read_volume(r[k]) for k in ("fixed", "moving", "fixed_mask", "moving_mask"))
        _, warped, timing = run_ants(f, m, fm, mm, mm)
        ants.append({"id": r["id"], "wall_s": timing["wall_s"],
                     "liver_dice": dice(np.asarray(warped.array) > 0, np.asarray(fm.array) > 0)})
        print(ants[-1], flush=True)
    result["ants"] = ants
    full_rows = rows[: args.cases]
    write_manifest(full_rows, args.work / "full.csv")
    full = args.work / "full"
    shutil.rmtree(full, ignore_errors=True)
    first = cohort(args.work / "full.csv", full, args.full_batch, warm_cache, kill_after=args.kill_after)
    before = written(full)
    second = cohort(args.work / "full.csv", full, args.full_batch, warm_cache)
    with open(full / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    shutil.copy(full / "summary.csv", args.out / "cohort_full_summary.csv")
    dices = [liver_dice(r, full) for r in full_rows]
    pairs_per_s = len(full_rows) / (first["wall_s"] + second["wall_s"])
    ants_pairs_per_s = len(ants) / sum(a["wall_s"] for a in ants)
    result["full"] = {"cases": len(full_rows), "batch": args.full_batch, "killed": first["killed"],
                      "first_wall_s": first["wall_s"], "written_before_kill": before,
                      "resume_wall_s": second["wall_s"], "resume_said": second["stdout"],
                      "done": sum(s["status"] == "done" for s in summary),
                      "failed": sum(s["status"] == "failed" for s in summary),
                      "pairs_per_s": pairs_per_s, "ants_pairs_per_s": ants_pairs_per_s,
                      "times_ants": pairs_per_s / ants_pairs_per_s,
                      "liver_dice_mean": float(np.mean(dices)), "liver_dice_min": float(np.min(dices))}
    result["load_average_end"] = os.getloadavg()
    (args.out / "cohort.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["full"], indent=1))


if __name__ == "__main__":
    main()

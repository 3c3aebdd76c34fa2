"""``sirtjax register`` on new patients whose grids the warm cache has never seen, against ANTs SyN and elastix.

What a user waits for: one ``sirtjax register`` process per pair (cnn-guided, liver masks), its wall time
from start-up to exit. The persistent cache is first filled by ``--warm`` other patients' registrations
(CT->CT and MR->CT). Each test pair is then made new: the fixed and moving images of a 3 mm phantom study are
cropped to a random field of view (every axis 70-100 % of its extent), so every pair has grids of its own;
the warm-up patients are cropped the same way.
ANTs SyN and elastix (as in ``run.py``) register the same pairs in the same run, timed in-process, without
reading or writing files. Their start-up is measured apart: the median wall time of a fresh Python process that
only imports the peer (``startup.json``), which a user of their Python packages waits for on every call, as
for sirtjax. Liver Dice and the liver folding of sirtjax come from the files it wrote.

    python benchmarks/registration/cli_new_patients.py --warm 10-13 --seeds 4-9 \\
        --out benchmarks/registration/results/round19_cli
    python benchmarks/registration/cli_new_patients.py --grids clinical --peers ants-user --warm 10-13 --seeds 4-9 \\
        --out benchmarks/registration/results/clinical_cli

``--grids clinical`` resamples each cropped image to a clinical grid drawn per image (fixed 3 or 1.5 mm; moving
0.8 x 0.8 x 2.5, 1.5 or 2 mm); ``--peers ants-user`` runs ANTs SyN on the same files as a user does, one process a
pair, reading and writing files (``ants_user.py``), timed from the process's start to its outputs written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sirtjax.io import read_volume, write_volume
from sirtjax.metrics import dice
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.preprocess import resample_to_spacing
from sirtjax.registration.warp import warp_volume
from sirtjax.volume import Volume

from run import run_ants, run_elastix, seed_range


def cropped(vol: Volume, lo: np.ndarray, hi: np.ndarray) -> Volume:
    """vol cut to voxels lo:hi (z, y, x), its origin moved to the first kept voxel."""
    arr = np.asarray(vol.array)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    origin = np.asarray(vol.origin_mm) + np.asarray(vol.direction) @ (np.asarray(vol.spacing_mm) * lo[::-1])
    return Volume(arr, vol.spacing_mm, origin, vol.direction)


def random_box(shape, rng: np.random.Generator, liver: np.ndarray, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A box of 70-100 % of each axis that keeps the liver and ``margin`` voxels around it (the same patient
    seen in another field of view)."""
    shape = np.asarray(shape)
    idx = np.argwhere(liver)
    first, last = np.maximum(idx.min(0) - margin, 0), np.minimum(idx.max(0) + 1 + margin, shape)
    size = np.minimum(np.maximum(np.rint(shape * rng.uniform(0.7, 1.0, 3)).astype(int), last - first), shape)
    lo = np.array([rng.integers(max(0, b - s), min(f, n - s) + 1) for n, s, f, b in zip(shape, size, first, last)])
    return lo, lo + size


# the grids of clinical pairs (x, y, z mm): a fixed CT of 3 or 1.5 mm, a moving image of 0.8 x 0.8 x 2.5, 1.5 or 2 mm
CLINICAL_FIXED_MM = ((3.0, 3.0, 3.0), (1.5, 1.5, 1.5))
CLINICAL_MOVING_MM = ((0.8, 0.8, 2.5), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0))


def write_pair(study, moving: str, folder: Path, rng: np.random.Generator | None, clinical: bool = False) -> dict[str, Path]:
    """The fixed MAA CT and a moving image with their liver masks as NIfTI files, each cropped to its own box; with
    ``clinical``, each then resampled to a grid drawn from ``CLINICAL_FIXED_MM`` / ``CLINICAL_MOVING_MM`` (the image
    linearly, its mask by nearest neighbour)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, name, grids in (("fixed", "maa_ct", CLINICAL_FIXED_MM), ("moving", moving, CLINICAL_MOVING_MM)):
        image, liver = study.images[name], study.images[f"{name}_liver"]
        if rng is not None:
            lo, hi = random_box(np.asarray(liver.array).shape, rng, np.asarray(liver.array) > 0)
            image, liver = cropped(image, lo, hi), cropped(liver, lo, hi)
        if clinical:
            spacing = grids[int(rng.integers(len(grids)))]
            image, liver = resample_to_spacing(image, spacing, order=1), resample_to_spacing(liver, spacing, order=0)
        out[role] = write_volume(image, folder / f"{role}.nii.gz")
        out[f"{role}_liver"] = write_volume(liver, folder / f"{role}_liver.nii.gz")
    return out


def sirtjax_cli(files: dict[str, Path], out: Path, env: dict, extra_args: list[str] = ()) -> dict:
    """One ``sirtjax register`` process (cnn-guided): wall time, the report's times, liver Dice and folding."""
    cmd = [sys.executable, "-m", "sirtjax", "register", str(files["fixed"]), str(files["moving"]),
           "--fixed-mask", str(files["fixed_liver"]), "--moving-mask", str(files["moving_liver"]), "-o", str(out),
           *extra_args]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    fixed_liver = np.asarray(read_volume(files["fixed_liver"]).array) > 0
    field = next(p for p in (out / "displacement.nii.gz", out / "displacement.nii") if p.exists())
    warped = warp_volume(read_volume(files["moving_liver"]), read_volume(field, vector=True), order=0)
    return {"sirtjax_wall_s": round(wall, 2), "sirtjax_command_s": round(report["total_s"], 2),
            "sirtjax_compile_s": round(report["compile_s"], 2), "sirtjax_optimise_s": round(report["optimise_s"], 2),
            **{f"sirtjax_{k}_s": round(v, 2) for k, v in report.get("seconds", {}).items()},
            "sirtjax_dice": round(dice(np.asarray(warped.array) > 0, fixed_liver), 4),
            "sirtjax_folding_liver_pct": round(100 * report["jacobian_liver"]["fraction_nonpositive"], 4)}


def ants_user(files: dict[str, Path], out: Path, python_s: float) -> dict:
    """ANTs SyN as a user runs it, one process a pair (``ants_user.py``): the seconds from the process's start to its
    outputs written (the interpreter's own start, ``python_s``, plus what the script times), and liver Dice."""
    cmd = [sys.executable, str(Path(__file__).with_name("ants_user.py")), str(files["fixed"]), str(files["moving"]),
           str(files["fixed_liver"]), str(files["moving_liver"]), str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    user_s = json.loads(done.stdout.strip().splitlines()[-1])["user_s"]
    fixed_liver = np.asarray(read_volume(files["fixed_liver"]).array) > 0
    warped = np.asarray(read_volume(out / "liver_warped.nii.gz").array) > 0
    return {"wall_s": round(python_s + user_s, 2), "dice": round(dice(warped, fixed_liver), 4)}


def peer(method, files: dict[str, Path]) -> dict:
    """ANTs SyN or elastix on the pair, in this process: wall time and liver Dice (its warped moving liver)."""
    f, m = read_volume(files["fixed"]), read_volume(files["moving"])
    fm, mm = read_volume(files["fixed_liver"]), read_volume(files["moving_liver"])
    _, warped, t = method(f, m, fm, mm, mm)
    return {"wall_s": round(t["wall_s"], 2), "dice": round(dice(np.asarray(warped.array) > 0, np.asarray(fm.array) > 0), 4)}


# what a fresh process of each peer must run before it can register (itk loads elastix lazily, on first use)
PEER_IMPORTS = {"ants": "import ants", "elastix": "import itk; itk.ElastixRegistrationMethod"}


def startup_s(statement: str, repeats: int = 3) -> float:
    """Median wall seconds of a fresh Python process that runs only ``statement`` (a peer's imports)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", default="10-13", help="other patients whose registrations fill the cache first")
    ap.add_argument("--seeds", default="4-9", help="the new patients")
    ap.add_argument("--moving", default="diag_ct,diag_mr")
    ap.add_argument("--peers", default="ants,elastix",
                    help="ants, elastix (in this process, timed without files), ants-user (ants_user.py, a process a pair)")
    ap.add_argument("--grids", default="phantom", choices=["phantom", "clinical"],
                    help="phantom: the 3 mm study; clinical: fixed 3 or 1.5 mm, moving 0.8 x 0.8 x 2.5, 1.5 or 2 mm")
    ap.add_argument("--sirtjax-args", default="", help="extra options of every sirtjax register call, e.g. --no-compress")
    ap.add_argument("--out", default="benchmarks/registration/results/cli_new_patients")
    a = ap.parse_args()
    peers, clinical, extra = a.peers.split(","), a.grids == "clinical", a.sirtjax_args.split()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    python_s = startup_s("pass")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, SIRTJAX_CACHE_DIR=str(tmp / "cache"))
        cache_state = "empty cache"
        for seed in seed_range(a.warm):
            study = generate_study(seed, PhantomConfig())
            rng = np.random.default_rng(seed)
            for moving in a.moving.split(","):
                files = write_pair(study, moving, tmp / f"warm{seed}{moving}", rng, clinical)
                row = {"seed": seed, "moving": moving, "cache": cache_state, **grids(files),
                       **sirtjax_cli(files, tmp / f"warm{seed}{moving}" / "out", env, extra)}
                cache_state = "warming"
                print(json.dumps(row), flush=True)
                rows.append(row)
        for seed in seed_range(a.seeds):
            study = generate_study(seed, PhantomConfig())
            rng = np.random.default_rng(seed)
            for moving in a.moving.split(","):
                folder = tmp / f"s{seed}{moving}"
                files = write_pair(study, moving, folder, rng, clinical)
                row = {"seed": seed, "moving": moving, "cache": "new grids, warm", **grids(files),
                       **sirtjax_cli(files, folder / "out", env, extra)}
                for name in peers:
                    result = ants_user(files, folder / "ants", python_s) if name == "ants-user" else \
                        peer({"ants": run_ants, "elastix": run_elastix}[name], files)
                    row.update({f"{name}_{k}": v for k, v in result.items()})
                print(json.dumps(row), flush=True)
                rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "cli_new_patients.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    startup = {name: startup_s(PEER_IMPORTS[name]) for name in peers if name in PEER_IMPORTS}
    (out / "startup.json").write_text(json.dumps(startup) + "\n")
    print("peer start-up s:", startup)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    (out / "uptime.txt").write_text(f"{load}\ncommit {commit}\n")
    print(load)


def grids(files: dict[str, Path]) -> dict:
    """The pair's grids: shapes (z x y x x) and spacings (x, y, z mm) of the fixed and moving images."""
    row = {}
    for role in ("fixed", "moving"):
        vol = read_volume(files[role])
        row[f"{role}_shape"] = "x".join(map(str, vol.shape))
        row[f"{role}_mm"] = "x".join(f"{s:g}" for s in np.round(np.asarray(vol.spacing_mm, float), 2))
    return row


if __name__ == "__main__":
    main()

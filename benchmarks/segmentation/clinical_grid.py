"""`sirtjax segment` on a CT as a scanner reconstructs it: 0.78 x 0.78 x 1.25 mm voxels, 513 x 513 in-plane.

Renders the portal-venous CT of one study-renderer seed on that grid (400 x 400 x 360 mm) in a separate process,
writes it and its liver truth, then runs the command line twice in new processes (the first with an empty program
cache, the second warm) and reports each call's wall time, its peak memory and the liver DSC against the truth.

    python benchmarks/segmentation/clinical_grid.py [--seed 300] [--work runs/clinical_grid]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPACING_MM = (0.78, 0.78, 1.25)
FOV_MM = (400.0, 400.0, 360.0)


def render(seed: int, work: Path) -> str:
    """Write the seed's portal-venous CT on the clinical grid and its liver to work; the grid's size (x, y, z)."""
    import dataclasses

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from sirtjax.io import write_volume
    from sirtjax.phantom import PhantomConfig, generate_study

    base = PhantomConfig()
    grid = dataclasses.replace(base.diag_ct, spacing_mm=SPACING_MM, fov_mm=FOV_MM)
    study = generate_study(seed, dataclasses.replace(base, diag_ct=grid))
    write_volume(study.images["diag_ct"], work / "ct.nii.gz")
    write_volume(study.images["diag_ct_liver"], work / "truth.nii.gz", dtype=np.uint8)
    return "x".join(map(str, study.images["diag_ct"].shape[::-1]))


def main() -> None:
    """Render, segment twice from the command line, print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=300)
    ap.add_argument("--work", default="runs/clinical_grid")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(1) as pool:  # the renderer's memory stays out of the measured calls
        size = pool.apply(render, (a.seed, work))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "SIRTJAX_CACHE_DIR": str(cache)}
    rows = []
    for label in ("empty program cache", "cache warm"):
        out = work / "liver.nii.gz"
        start = time.perf_counter()
        call = subprocess.Popen([sys.executable, "-m", "sirtjax", "segment", str(work / "ct.nii.gz"), "-o", str(out), "--overwrite"],
                                env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(call.pid, 0)
        call.returncode = os.waitstatus_to_exitcode(status)
        if call.returncode:
            raise SystemExit(f"sirtjax segment failed (exit {call.returncode})")
        rows.append((label, time.perf_counter() - start, usage.ru_maxrss / 2**20))
    from sirtjax.io import read_volume
    from sirtjax.metrics import dice

    score = dice(np.asarray(read_volume(out).array) > 0, np.asarray(read_volume(work / "truth.nii.gz").array) > 0)
    print(f"seed {a.seed}: {size} voxels (x, y, z) at {' x '.join(map(str, SPACING_MM))} mm; liver DSC {score:.3f}")
    print("| call | wall s | peak memory GiB |\n|---|---|---|")
    for label, wall, peak in rows:
        print(f"| {label} | {wall:.1f} | {peak:.2f} |")


if __name__ == "__main__":
    main()

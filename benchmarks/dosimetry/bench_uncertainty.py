"""Time and memory of the dose-uncertainty ensemble on one phantom study (3 mm CT, 4.42 mm MAA SPECT), beside the
plain way of getting it: one ``voxel_dosimetry`` call per member with perturbed inputs.

    python benchmarks/dosimetry/bench_uncertainty.py [--seed 200] [--n 32]

Rows: the ensemble of N members over every source (with and without the one-source-at-a-time tornado,
6 N + 1 and N + 1 doses), first call (compiles) and second call (the compiled program reused); and the
loop of N voxel_dosimetry calls with masks moved the same way (scipy EDT per member on the CT grid,
nearest-neighbour resampling onto the SPECT). Peak memory is this process's maximum RSS after each row.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    """Print the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=200)
    ap.add_argument("--n", type=int, default=32)
    a = ap.parse_args()
    import jax

    from sirtjax.dosimetry.uncertainty import UncertaintyModel, ensemble, signed_distance_mm
    from sirtjax.dosimetry.voxel import voxel_dosimetry
    from sirtjax.phantom import generate_study

    study = generate_study(a.seed)
    spect, liver, lesions = study.images["maa_spect"], study.images["maa_ct_liver"], study.images["maa_ct_lesions"]
    gbq, lsf = float(study.truth["activities"]["y90_gbq"]), float(study.truth["lung_shunt_fraction"]["maa"])
    model = UncertaintyModel(calibration_rel_sd=0.05, lung_shunt_sd=0.02, boundary_sd_mm=2.0)
    load0 = os.getloadavg()[0]
    rows = []
    for tornado in (True, False):
        for call in ("first", "second"):
            t = time.perf_counter()
            e = ensemble(spect, liver, lesions, activity_gbq=gbq, lung_shunt_fraction=lsf, model=model,
                         key=jax.random.key(1 if call == "second" else 0), n=a.n, tornado=tornado)
            doses = (1 + a.n * (1 + len(e.by_source))) if tornado else a.n + 1
            rows.append((f"ensemble, {'with' if tornado else 'without'} tornado ({doses} doses), {call} call",
                         time.perf_counter() - t, _rss_gib()))
    rng = np.random.default_rng(0)
    sdf = np.asarray(signed_distance_mm(liver)[0].array)
    t = time.perf_counter()
    for _ in range(a.n):
        moved = liver.with_array((sdf <= rng.normal(0, 2.0)).astype(np.uint8))
        voxel_dosimetry(spect, moved, lesions=lesions, activity_gbq=gbq * (1 + 0.05 * rng.normal()),
                        lung_shunt_fraction=float(np.clip(lsf + 0.02 * rng.normal(), 0, 0.9)))
    rows.append((f"loop of {a.n} voxel_dosimetry calls (N + 0 doses, no tornado)", time.perf_counter() - t, _rss_gib()))
    print(f"phantom seed {a.seed}: SPECT {spect.shape} at {spect.spacing_mm[0]:.2f} mm, CT liver {liver.shape} at "
          f"{liver.spacing_mm[0]:.1f} mm; N = {a.n}; jax {jax.__version__} ({jax.devices()[0].platform}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs); load average {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| path | seconds | peak RSS so far (GiB) |\n|---|---|---|")
    for name, sec, rss in rows:
        print(f"| {name} | {sec:.1f} | {rss:.2f} |")


if __name__ == "__main__":
    main()

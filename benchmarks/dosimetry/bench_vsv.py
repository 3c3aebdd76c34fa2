"""Time VSV dose of a 256^3 activity map plus statistics of 20 VOIs: sirtjax vs scipy + numpy.

Run from the repository root:  python benchmarks/dosimetry/bench_vsv.py [--size 256] [--repeats 3]

The case: a (n, n, n) grid of 4.42 mm voxels (a tabulated size, so both paths convolve with the
same 11^3 Lanconelli kernel), activity everywhere (a smooth liver-like field plus noise, like a PET,
so nothing can be skipped), and a disjoint label map with 20 VOIs (normal liver, 18 lesions of
varied size, lungs).
  - sirtjax: ``dose_vsv`` (jit rfft convolution) then ``voi_statistics`` (mean/min/max, D70, D50,
    V70, V100, V120 and a 500-bin DVH for all VOIs in one call). The first call compiles; the
    steady-state time is the median of ``--repeats`` further calls.
  - peer: ``scipy.signal.fftconvolve(mode="same")`` with the same kernel, then numpy per VOI
    (boolean mask, sort for D_x, counts for V_x, ``np.histogram`` + cumulative sum for the DVH),
    with scipy.fft on 1 worker (its default) and on all cores.
Prints a markdown table and the agreement of the two results.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import jax
import numpy as np
import scipy
import scipy.fft
import scipy.signal
from scipy import ndimage

from sirtjax.dosimetry.dose import dose_vsv, vsv_gy_per_gbq
from sirtjax.dosimetry.kernels import voxel_kernel
from sirtjax.dosimetry.statistics import voi_statistics

SPACING = (4.42, 4.42, 4.42)
DX = (70.0, 50.0)
VX = (70.0, 100.0, 120.0)
BINS = 500


def make_case(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activity (GBq per voxel, float32) and a 20-VOI label map (int32), both (n, n, n)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((n, n, n), sparse=True)
    liver = (((z - 0.45 * n) / (0.25 * n)) ** 2 + ((y - 0.5 * n) / (0.22 * n)) ** 2 + ((x - 0.45 * n) / (0.3 * n)) ** 2) < 1
    lungs = (((z - 0.85 * n) / (0.1 * n)) ** 2 + ((y - 0.5 * n) / (0.3 * n)) ** 2 + ((x - 0.5 * n) / (0.35 * n)) ** 2) < 1
    labels = np.zeros((n, n, n), np.int32)
    labels[liver] = 1
    smooth = ndimage.gaussian_filter(rng.random((n, n, n), np.float32), 3.0)
    activity = 0.02 * smooth / smooth.max() + liver * 1.0
    centres = [(cz, cy, cx) for cz in (0.38, 0.52) for cy in (0.4, 0.5, 0.6) for cx in (0.33, 0.45, 0.57)]
    for lab, centre in enumerate(centres, start=2):  # 18 lesions on a jittered lattice, no overlap
        c = (np.asarray(centre) + rng.uniform(-0.01, 0.01, 3)) * n
        r = rng.uniform(0.015, 0.04) * n
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
        labels[inside] = lab
        activity = activity + inside * rng.uniform(2.0, 6.0)
    labels[lungs & (labels == 0)] = 20
    if len(np.unique(labels)) != 21:
        raise RuntimeError("a VOI was drawn over entirely; use another seed")
    activity = activity * rng.gamma(20.0, 1 / 20.0, (n, n, n))  # counting noise
    return (activity * (1.5 / activity.sum())).astype(np.float32), labels  # 1.5 GBq in all


def sirtjax_path(activity, labels):
    dose = dose_vsv(activity, SPACING)
    stats = voi_statistics(dose, labels, voxel_volume_ml=math.prod(SPACING) / 1000, num_labels=20,
                           dose_levels_pct=DX, volume_levels_gy=VX, num_bins=BINS)
    return np.asarray(dose), stats


def numpy_path(activity, labels, kernel_gy_per_gbq, edges):
    dose = scipy.signal.fftconvolve(activity, kernel_gy_per_gbq, mode="same")
    np.maximum(dose, 0.0, out=dose)
    rows = []
    for lab in range(1, 21):
        v = dose[labels == lab]
        s = np.sort(v)[::-1]
        n = s.size
        d = [s[max(1, math.ceil(x * n / 100)) - 1] for x in DX]
        vx = [100.0 * np.count_nonzero(v >= x) / n for x in VX]
        hist, _ = np.histogram(v, bins=edges)
        cdvh = np.cumsum(hist[::-1])[::-1] / n
        rows.append((v.mean(), s[-1], s[0], d, vx, cdvh))
    return dose, rows


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    activity, labels = make_case(args.size)
    kernel = vsv_gy_per_gbq(voxel_kernel(SPACING))

    compile_s, (dose_j, stats) = timed(sirtjax_path, activity, labels)
    runs = [timed(sirtjax_path, activity, labels)[0] for _ in range(args.repeats)]
    sirtjax_s = float(np.median(runs))

    edges = stats.dvh_edges_gy
    scipy_1_s, (dose_s, rows) = timed(numpy_path, activity, labels, kernel, edges)
    with scipy.fft.set_workers(os.cpu_count()):
        scipy_all_s, _ = timed(numpy_path, activity, labels, kernel, edges)

    dose_err = float(np.max(np.abs(dose_j - dose_s)) / dose_s.max())
    d_err = max(abs(stats.d_gy[i, j] / rows[i][3][j] - 1) for i in range(20) for j in range(len(DX)))
    mean_err = max(abs(stats.mean_gy[i] / rows[i][0] - 1) for i in range(20))
    v_err = max(abs(stats.v_pct[i, j] - rows[i][4][j]) for i in range(20) for j in range(len(VX)))
    cdvh_err = max(float(np.max(np.abs(stats.cdvh_fraction[i] - rows[i][5]))) for i in range(20))

    voxels = [int(c) for c in stats.voxel_count]
    print(f"grid {args.size}^3 at {SPACING[0]} mm, 20 VOIs of {min(voxels)}-{max(voxels)} voxels "
          f"({sum(voxels)} labelled), kernel 11^3; load average {os.getloadavg()[0]:.1f} at the end; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; jax {jax.__version__} "
          f"({jax.devices()[0].platform}), scipy {scipy.__version__}, numpy {np.__version__}")
    print()
    print("| path | seconds |")
    print("|---|---|")
    print(f"| sirtjax dose_vsv + voi_statistics, first call (includes compilation) | {compile_s:.2f} |")
    print(f"| sirtjax dose_vsv + voi_statistics, after compilation (median of {args.repeats}: "
          f"{', '.join(f'{r:.2f}' for r in runs)}) | {sirtjax_s:.2f} |")
    print(f"| scipy.signal.fftconvolve + numpy per VOI, scipy.fft 1 worker (default) | {scipy_1_s:.2f} |")
    print(f"| scipy.signal.fftconvolve + numpy per VOI, scipy.fft {os.cpu_count()} workers | {scipy_all_s:.2f} |")
    print()
    print(f"agreement: max |dose difference| / max dose {dose_err:.1e}; D_x max relative difference {d_err:.1e}; "
          f"mean {mean_err:.1e}; V_x max difference {v_err:.2e} percentage points; cumulative DVH {cdvh_err:.1e}")


if __name__ == "__main__":
    main()

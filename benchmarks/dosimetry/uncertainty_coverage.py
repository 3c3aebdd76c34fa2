"""Does the dose-uncertainty ensemble's 5-95 % interval hold the true dose about 90 % of the time, on phantom studies?

For each phantom study (the study renderer, seeds never used in training) the truth is the dose of
the MAA SPECT with the true liver and lesion masks, the true administered activity and the true
lung shunt. The observed inputs are what a physicist would have:
  - the liver as the shipped model segments it on the MAA CT (the real segmentation error);
  - an activity off by N(0, 5 %) (calibration) and an LSF off by N(0, 0.02);
  - the true lesions.
The ensemble runs on the observed inputs with those sds and a liver-boundary sd calibrated first on
other seeds: the RMS over those seeds of the segmentation's volume-equivalent outline offset, the offset of
the true outline along the ensemble's own distance map that gives it the segmentation's volume on the
SPECT grid. Reported: the calibrated sd, the coverage of the
liver's mean dose, and the interval widths.

    python benchmarks/dosimetry/uncertainty_coverage.py [--calibrate 400-409] [--evaluate 410-431] [--n 32] [--boundary-sd-mm S]

A 5-95 % interval of n members holds a new draw of the same distribution with probability 0.9 (n - 1) / (n + 1),
0.845 for n = 32: the rate printed beside the nominal 0.90.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _seeds(text: str) -> list[int]:
    lo, hi = (int(v) for v in text.split("-"))
    return list(range(lo, hi + 1))


def case(seed: int, segmenter):
    """(spect, true liver, segmented liver, true lesions, activity GBq, LSF) of a phantom study on its MAA CT."""
    from sirtjax.phantom import generate_study

    study = generate_study(seed)
    ct = study.images["maa_ct"]
    return (study.images["maa_spect"], study.images["maa_ct_liver"], segmenter(ct, "CT"), study.images["maa_ct_lesions"],
            float(study.truth["activities"]["y90_gbq"]), float(study.truth["lung_shunt_fraction"]["maa"]))


def offset_mm(true_liver, segmented, grid) -> float:
    """The outward offset (mm) of the true liver's outline that gives it the segmentation's volume on the dose grid:
    the offset the ensemble would have to draw to match the volume error. The ensemble's own map is used (the
    signed distance on the CT grid, resampled linearly onto the SPECT's), and the segmentation is resampled as the
    dose table resamples it (nearest neighbour); the offset is found by bisection."""
    from sirtjax.dosimetry.uncertainty import outline_distance_on_grid
    from sirtjax.preprocess import resample_to

    sdf, _ = outline_distance_on_grid(true_liver, grid, 30.0)
    target = np.count_nonzero(np.asarray(resample_to(segmented, grid, order=0).array))
    lo, hi = -25.0, 25.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.count_nonzero(sdf <= mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def main() -> None:
    """Calibrate the boundary sd, then count how often the interval holds the truth."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", default="400-409")
    ap.add_argument("--evaluate", default="410-431")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--boundary-sd-mm", type=float, default=None, help="use this outline sd instead of calibrating one")
    a = ap.parse_args()
    import jax

    from sirtjax.dosimetry.uncertainty import UncertaintyModel, ensemble
    from sirtjax.dosimetry.voxel import voxel_dosimetry
    from sirtjax.pipelines.segment import model_segmenter

    segmenter = model_segmenter("liver")
    t0 = time.perf_counter()
    offsets = []
    for seed in _seeds(a.calibrate) if a.boundary_sd_mm is None else []:
        spect, liver, seg, *_ = case(seed, segmenter)
        offsets.append(offset_mm(liver, seg, spect))
        print(f"calibration seed {seed}: offset {offsets[-1]:+.2f} mm", flush=True)
    sd_mm = float(np.sqrt(np.mean(np.square(offsets)))) if a.boundary_sd_mm is None else a.boundary_sd_mm
    model = UncertaintyModel(calibration_rel_sd=0.05, lung_shunt_sd=0.02, boundary_sd_mm=sd_mm)
    rows, covered = [], []
    for seed in _seeds(a.evaluate):
        rng = np.random.default_rng(seed)
        spect, liver, seg, lesions, gbq, lsf = case(seed, segmenter)
        truth = voxel_dosimetry(spect, liver, lesions=lesions, activity_gbq=gbq, lung_shunt_fraction=lsf)
        true_mean = truth.report["vois"][0]["mean_gy"]
        a_obs, lsf_obs = gbq * (1 + 0.05 * rng.normal()), float(np.clip(lsf + 0.02 * rng.normal(), 0, 0.9))
        e = ensemble(spect, seg, lesions, activity_gbq=a_obs, lung_shunt_fraction=lsf_obs, model=model,
                     key=jax.random.key(seed), n=a.n, tornado=False)
        p5, p50, p95 = np.percentile(e.all[:, 0, 0], [5, 50, 95])
        covered.append(p5 <= true_mean <= p95)
        rows.append(f"| {seed} | {offset_mm(liver, seg, spect):+.2f} | {true_mean:.1f} | {e.nominal[0, 0]:.1f} | "
                    f"{p5:.1f} - {p95:.1f} | {'yes' if covered[-1] else 'no'} |")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    print(f"\nliver-boundary sd {sd_mm:.2f} mm (" + (f"RMS offset of seeds {a.calibrate}: " + ", ".join(
        f"{o:+.2f}" for o in offsets) if offsets else "given") + ")")
    # a new draw falls between the sample's 5th and 95th percentiles (linear ranks 1 + 0.05 (n - 1) and 1 + 0.95 (n - 1))
    # with probability 0.9 (n - 1) / (n + 1): what an exact error model of n members covers
    expected = 0.9 * (a.n - 1) / (a.n + 1)
    print(f"coverage of the liver's mean dose: {np.mean(covered):.2f} ({sum(covered)} of {len(covered)}) for the nominal 0.90 "
          f"({expected:.3f} with {a.n} members); {time.perf_counter() - t0:.0f} s; load average {load:.1f}\n")
    print("| seed | segmentation offset (mm) | true liver mean (Gy) | observed (Gy) | 5-95 % interval (Gy) | holds the truth |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""Liver DSC of segmentation models on study-renderer images of unseen seeds: the standard images and a stress set.

Every image comes from `sirtjax.phantom.generate_study` (the study renderer, never the training
generator) for seeds that no training config uses (training 0-23, validation 100-101). One row per
condition, one column per model; each cell is the mean liver DSC over the seeds (min in brackets)
after the shipped post-processing, on the image's own grid, and beside it the mean error of the segmented liver
volume in % of the true volume in view (its range over the seeds), which a prescription from the liver's volume
inherits. Then the CPU time of `segment_liver` on
a 3 mm CT after compilation and this process's peak memory.

    python benchmarks/segmentation/stress.py [--models liver,OTHER_MODEL_DIR] [--seeds 300,301,302,303,304,305] [--workers 4] [--out FILE.md]

Studies are generated in a process pool (`--workers`); inference runs in the main process.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import platform
import resource
import time
from typing import Any

import numpy as np

# condition -> (image, modality, PhantomConfig overrides); grids are replaced field by field; the override "mr_like"
# turns the rendered CT into a T1-like MR (sirtjax.phantom.mr_like), as the held-out MR-like scans were made from a real CT,
# and "random_contrast": K into an image of a random intensity per HU (random_contrast's K-th draw for the seed)
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "CT non-contrast (MAA CT)": ("maa_ct", "ct", {}),
    "CT portal-venous (diag CT)": ("diag_ct", "ct", {}),
    "CT low-dose (50 HU noise)": ("maa_ct", "ct", {"ct_noise_hu": 50.0}),
    "CT 90Y (3.5 mm slices)": ("y90_ct", "ct", {}),
    "MR T1 (oblique grid)": ("diag_mr", "mr", {}),
    "stress: CT 3x noise (75 HU)": ("maa_ct", "ct", {"ct_noise_hu": 75.0}),
    "stress: CT 5 mm slices": ("diag_ct", "ct", {"diag_ct": {"spacing_mm": (1.5, 1.5, 5.0)}}),
    "stress: CT 8 mm slices": ("diag_ct", "ct", {"diag_ct": {"spacing_mm": (1.5, 1.5, 8.0)}}),
    "stress: CT arterial phase": ("diag_ct", "ct", {"diag_ct_phase": "arterial"}),
    "stress: CT delayed phase": ("diag_ct", "ct", {"diag_ct_phase": "delayed"}),
    "stress: MR T2-like": ("diag_mr", "mr", {"diag_mr_sequence": "t2"}),
    "stress: MR opposed-phase": ("diag_mr", "mr", {"diag_mr_sequence": "opposed"}),
    "stress: liver cut by the field of view": ("maa_ct", "ct", {"maa_ct": {"fov_mm": (384.0, 336.0, 120.0)}}),
    "stress: ~3.5 L liver, large tumours": (
        "diag_ct", "ct", {"liver_scale": (1.25, 1.3), "liver_caudal_scale": 1.45, "n_lesions": (3, 5), "lesion_diameter_mm": (60.0, 100.0)}
    ),
    "stress: ~0.9 L liver": ("diag_ct", "ct", {"liver_scale": (0.74, 0.76)}),
    "stress: arms down, 540 mm field of view": ("maa_ct", "ct", {"arms_down": True, "maa_ct": {"fov_mm": (540.0, 336.0, 240.0)}}),
    "stress: thin body (BMI 16-17)": ("diag_ct", "ct", {"bmi": (16.0, 17.0)}),
    "stress: obese body (BMI 40-45), 500 mm field of view": ("diag_ct", "ct", {"bmi": (40.0, 45.0), "diag_ct": {"fov_mm": (500.0, 400.0, 288.0)}}),
    "stress: CT oblique grid": ("diag_ct", "ct", {"diag_ct": {"direction": "oblique"}}),
    "stress: left lobe far left, compressed": ("diag_ct", "ct", {"left_lobe_shift_mm": 35.0, "liver_ap_scale": 0.8}),
    "stress: MR-like remap of the portal-venous CT": ("diag_ct", "mr", {"mr_like": True}),
    "stress: MR-like remap of the non-contrast CT": ("maa_ct", "mr", {"mr_like": True}),
    **{f"stress: random contrast {k} of the {name} CT": (image, "mr", {"random_contrast": k})
       for image, name in (("diag_ct", "portal-venous"), ("maa_ct", "non-contrast")) for k in (1, 2, 3)},
    # a low-dose SPECT/CT protocol as scanners write it: fine in-plane voxels, thick slices, 50 HU noise per voxel
    "CT low-dose protocol (0.8 x 0.8 x 5 mm, 50 HU noise)": (
        "maa_ct", "ct", {"ct_noise_hu": 50.0, "maa_ct": {"spacing_mm": (0.8, 0.8, 5.0)}}
    ),
    # a diagnostic reconstruction as scanners write it: 513 x 513 in-plane, thin slices, 400 x 400 x 360 mm
    "CT portal-venous as reconstructed (0.78 x 0.78 x 1.25 mm)": (
        "diag_ct", "ct", {"diag_ct": {"spacing_mm": (0.78, 0.78, 1.25), "fov_mm": (400.0, 400.0, 360.0)}}
    ),
}


def phantom_config(overrides: dict[str, Any]):
    """PhantomConfig with overrides; a dict value for an image grid replaces those ImageGrid fields."""
    from sirtjax.phantom import PhantomConfig

    base = PhantomConfig()
    kw = {k: dataclasses.replace(getattr(base, k), **v) if isinstance(v, dict) else v for k, v in overrides.items()}
    return dataclasses.replace(base, **kw)


def render(job: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    """(condition, seed, {image, liver arrays, geometry, liver ml in view, whole liver ml}) of one row's study."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from sirtjax.phantom import generate_study
    from sirtjax.phantom.mr_like import mr_like, random_contrast

    condition, seed = job
    image, _, overrides = ROWS[condition]
    study = generate_study(seed, phantom_config({k: v for k, v in overrides.items() if k not in ("mr_like", "random_contrast")}))
    vol, liver = study.images[image], study.images[image + "_liver"]
    if overrides.get("mr_like"):
        vol = mr_like(vol, np.random.default_rng(seed))
    if "random_contrast" in overrides:
        vol = random_contrast(vol, np.random.default_rng([seed, overrides["random_contrast"]]))
    voxel_ml = float(np.prod(vol.spacing_mm)) / 1000
    return condition, seed, {
        "image": np.asarray(vol.array), "liver": np.asarray(liver.array), "spacing": np.asarray(vol.spacing_mm),
        "origin": np.asarray(vol.origin_mm), "direction": np.asarray(vol.direction),
        "liver_ml_in_view": float(np.asarray(liver.array).sum()) * voxel_ml, "liver_ml": study.truth["liver_volume_ml"],
    }


def main() -> None:
    """Render every row for every seed, segment with every model, print (and write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="liver")
    ap.add_argument("--seeds", default="300,301,302,303,304,305")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", default="", help="comma-separated row numbers (default all)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    import jax

    from sirtjax.metrics import dice
    from sirtjax.models import load_model
    from sirtjax.segmentation import segment_liver
    from sirtjax.volume import make_volume

    conditions = list(ROWS) if not a.rows else [list(ROWS)[int(i)] for i in a.rows.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    models = {name: load_model(name) for name in a.models.split(",")}
    jobs = [(c, s) for c in conditions for s in seeds]
    scores: dict[tuple[str, str], list[float]] = {}
    volume_errors_pct: dict[tuple[str, str], list[float]] = {}
    volumes: dict[str, list[tuple[float, float]]] = {}
    timing_jobs = {"MAA CT": ("CT non-contrast (MAA CT)", 300), "MAA CT at 3x noise (noise matched)": ("stress: CT 3x noise (75 HU)", 300)}
    timing_vols = {}
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for condition, seed, r in pool.imap_unordered(render, jobs):
            _, modality, _ = ROWS[condition]
            vol = make_volume(r["image"], r["spacing"], r["origin"], r["direction"])
            timing_vols.update({label: vol for label, job in timing_jobs.items() if job == (condition, seed)})
            volumes.setdefault(condition, []).append((r["liver_ml_in_view"], r["liver_ml"]))
            for name, (model, spec) in models.items():
                mask = segment_liver(model, spec, vol, modality=modality)
                scores.setdefault((condition, name), []).append(dice(np.asarray(mask.array), r["liver"]))
                volume_errors_pct.setdefault((condition, name), []).append(100.0 * (np.count_nonzero(mask.array) / np.count_nonzero(r["liver"]) - 1.0))
            print(f"{condition} seed {seed}: " + ", ".join(
                f"{n} {scores[(condition, n)][-1]:.3f} ({volume_errors_pct[(condition, n)][-1]:+.1f} % volume)" for n in models), flush=True)
    lines = [
        f"device: {jax.devices()[0].platform} ({platform.machine()}, {os.cpu_count()} CPUs); seeds {a.seeds}; models: "
        + "; ".join(f"{n} = {spec.get('arch')} {spec.get('features')} (val DSC {spec.get('val_dice', '-')})" for n, (_, spec) in models.items()),
        "",
        "| condition | image | liver ml in view (whole) | " + " | ".join(f"{n} DSC | {n} volume error %" for n in models) + " |",
        "|---|---|---|" + "---|---|" * len(models),
    ]
    for c in conditions:
        ml = np.mean(volumes[c], axis=0)
        cells = [f"{np.mean(scores[(c, n)]):.3f} ({np.min(scores[(c, n)]):.3f}) | {np.mean(volume_errors_pct[(c, n)]):+.1f} "
                 f"({np.min(volume_errors_pct[(c, n)]):+.1f} to {np.max(volume_errors_pct[(c, n)]):+.1f})" for n in models]
        lines.append(f"| {c} | {ROWS[c][0]} | {ml[0]:.0f} ({ml[1]:.0f}) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"mean DSC (min over seeds) and mean volume error (range over seeds) per row; {time.perf_counter() - t0:.0f} s in all")
    for label, job in timing_jobs.items():
        if label not in timing_vols:  # that row was not asked for: render it for the timing alone
            r = render(job)[2]
            timing_vols[label] = make_volume(r["image"], r["spacing"], r["origin"], r["direction"])
    lines += _timing(models, timing_vols, segment_liver)
    text = "\n".join(lines)
    print("\n" + text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def _timing(models: dict, vols: dict, segment_liver) -> list[str]:
    """CPU-or-device wall time of segment_liver on 3 mm CTs of seed 300 (clean and noisy), after compilation, and
    peak RSS."""
    out = [""]
    for label, vol in vols.items():
        out.append(f"segment_liver on the {'x'.join(str(n) for n in vol.shape)} 3 mm {label} of seed 300, after compilation:")
        for name, (model, spec) in models.items():
            segment_liver(model, spec, vol, modality="ct")
            t = []
            for _ in range(2):
                s = time.perf_counter()
                segment_liver(model, spec, vol, modality="ct")
                t.append(time.perf_counter() - s)
            out.append(f"- {name}: {min(t):.1f} s (best of 2)")
    out.append(f"peak memory of this process (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return out


if __name__ == "__main__":
    main()

"""Displacement error against the phantom's true field, binned by depth inside the fixed liver.

Landmark RMSD says how far off a registration is; this says where. For each pair it registers with a
sirtjax preset (optionally changed by ``--set KEY=VALUE``, JSON values, as run.py), computes the true
displacement of the fixed grid (``phantom.deform.true_displacement``) and prints, per band of depth
below the liver surface (Euclidean distance transform of the fixed liver mask, in mm), the mean and 90th
percentile of |u - u_true| and the mean error vector (x, y, z mm): a surface fitted by the masks but an
interior left behind shows as an error growing with depth.

    python benchmarks/registration/depth_error.py --seeds 101 --size full
    python benchmarks/registration/depth_error.py --seeds 101 --size full --set stages=[]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from run import parse_overrides, run_method
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.phantom.deform import true_displacement
from sirtjax.registration import PRESETS

BANDS_MM = ((0, 5), (5, 10), (10, 20), (20, 30), (30, 50), (50, 1000))


def depth_table(error_xyz: np.ndarray, liver: np.ndarray, spacing_zyx_mm: np.ndarray) -> list[dict]:
    """Per depth band inside the liver: voxel count, mean and p90 |error| (mm) and the mean error vector (x, y, z mm)."""
    depth = ndimage.distance_transform_edt(liver, sampling=spacing_zyx_mm)
    norm = np.linalg.norm(error_xyz, axis=-1)
    rows = []
    for lo, hi in BANDS_MM:
        band = liver & (depth > lo) & (depth <= hi)
        if band.any():
            rows.append({"depth_mm": f"{lo}-{hi}", "voxels": int(band.sum()), "mean_mm": float(norm[band].mean()),
                         "p90_mm": float(np.percentile(norm[band], 90)), "mean_xyz_mm": [round(float(v), 2) for v in error_xyz[band].mean(0)]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="101")
    ap.add_argument("--moving", default="diag_ct")
    ap.add_argument("--method", default="cnn-guided", choices=sorted(PRESETS))
    ap.add_argument("--size", default="full", choices=["small", "full"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a preset setting")
    a = ap.parse_args()
    overrides = parse_overrides(a.set)
    cfg = PhantomConfig.small() if a.size == "small" else PhantomConfig()
    for seed in (int(s) for s in a.seeds.split(",")):
        study = generate_study(seed, cfg)
        for mv in a.moving.split(","):
            f, fm = study.images["maa_ct"], study.images["maa_ct_liver"]
            disp, _, _ = run_method(a.method, f, study.images[mv], study.images["maa_ct_labels"], study.images[f"{mv}_labels"],
                                    fm, study.images[f"{mv}_liver"], overrides)
            error = np.asarray(disp.array) - np.asarray(true_displacement(study.truth, f, moving=mv).array)
            liver, spacing_zyx = np.asarray(fm.array) > 0, np.asarray(f.spacing_mm, np.float64)[::-1]
            print(f"seed {seed} {mv} {a.method}{a.set or ''}", flush=True)
            for row in depth_table(error, liver, spacing_zyx):
                print(f"  depth {row['depth_mm']:>7} mm  voxels {row['voxels']:6d}  mean {row['mean_mm']:.2f}  "
                      f"p90 {row['p90_mm']:.2f}  mean error xyz {row['mean_xyz_mm']}", flush=True)
            outside = (~liver) & (ndimage.distance_transform_edt(~liver, sampling=spacing_zyx) <= 20)
            print(f"  outside the liver, 0-20 mm: mean {np.linalg.norm(error[outside], axis=-1).mean():.2f}", flush=True)


if __name__ == "__main__":
    main()

"""sirtjax's presets and ANTs on registration pairs made from a real CT, with a known answer (not our phantom).

Each pair (`sirtjax.phantom.real_pairs.real_pair`) has the vendored real CT `ts_ct_112` (3 mm, pelvis to liver dome)
as the fixed image and, as the moving image, the same patient's anatomy in a posture drawn as the phantom draws one,
on a grid of 1.5 x 1.5 x 5 mm cut to 240 mm along z: the CT itself (moving `ct`) or an MR-like image made from its
labels with a random intensity per tissue, bias and noise (moving `mr`). Every method sees the same images, the
guided presets the same liver masks or label maps (liver and organ/vertebra landmarks). Scores as
`benchmarks/registration/run.py`: liver Dice, RMSD of the warped label map (liver surface and landmark centres),
folding, and the field's error against the known displacement over the fixed liver. ``--keep-back`` guides
cnn-lm-guided with every other landmark only and scores every method on the others.

    python benchmarks/registration/real.py --seeds 1-6 --moving ct,mr --methods truth,image-based,cnn-guided,cnn-lm-guided,ants \
        --out benchmarks/registration/results/real_NEW

``--set KEY=VALUE`` changes a setting of every sirtjax preset, as in run.py. Prints one JSON line per row and writes
``rows.csv``; summarise with ``python benchmarks/registration/summarise.py OUT/rows.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from run import PRESETS, field_error, kept_back_ids, kept_back_mcd, parse_overrides, run_method, score, seed_range, without_landmarks
from sirtjax.io import read_volume
from sirtjax.phantom.real_pairs import real_pair
from sirtjax.segmentation.validation import real_scans

SCAN = "ts_ct_112"
METRICS = ("dice_liver", "rmsd_mm", "msd_mm", "kept_back_mcd_mm", "folding_liver", "field_err_mm", "field_err_p90_mm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1-6")
    ap.add_argument("--moving", default="ct,mr", help="ct, mr or both: the moving image's kind")
    ap.add_argument("--methods", default="truth,image-based,cnn-guided,cnn-lm-guided,ants")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a sirtjax preset setting")
    ap.add_argument("--keep-back", action="store_true", help="guide with every other landmark and score the rest")
    a = ap.parse_args()
    overrides = parse_overrides(a.set)
    tag = f"[{';'.join(a.set)}]" if a.set else ""
    scan = real_scans()[SCAN]
    ct, labels = read_volume(scan.image), read_volume(scan.labels)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["size", "moving", "seed", "method", *METRICS, "wall_s", "compile_s", "run_s", "compile_all_s", "error"]
    with open(out / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for seed in seed_range(a.seeds):
            for kind in a.moving.split(","):
                p = real_pair(ct, labels, seed=seed, kind=kind)
                f, m, fl, ml, fm, mm = p.fixed, p.moving, p.fixed_labels, p.moving_labels, p.fixed_liver, p.moving_liver
                kept = kept_back_ids(fl, ml) if a.keep_back else []
                guide = (without_landmarks(fl, fm, kept), without_landmarks(ml, mm, kept))
                for method in a.methods.split(","):
                    try:
                        disp, warped, t = (p.true_displacement, None, {}) if method == "truth" else run_method(
                            method, f, m, fl, ml, fm, mm, overrides, guide)
                        s = score(disp, warped, fl, ml)
                        s = {**s, "kept_back_mcd_mm": kept_back_mcd(s["mcd_mm"], kept), **field_error(disp, p.true_displacement, fm)}
                        error = ""
                    except Exception as exc:  # a failing method is a result (recorded), not the end of the run
                        s, t = dict.fromkeys(METRICS, float("nan")), {}
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    row = {"size": "real", "moving": kind, "seed": seed, "method": method + (tag if method in PRESETS else ""),
                           **{k: s[k] for k in METRICS}, **t, "error": error}
                    w.writerow(row)
                    fh.flush()
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()

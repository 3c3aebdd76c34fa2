"""The presets on a diagnostic CT written as scanners write it: padding outside the reconstruction circle, and metal.

Clinical CTs carry -3024 (or -2048) HU outside the scanner's reconstruction circle and a few voxels of metal
(clips, coils, often after an earlier embolisation) at the top of the range; the phantom has neither. Each pair
is registered twice, the diagnostic CT clean and corrupted (air outside a circle of 0.48 of the in-plane size set
to -3024, a 3 x 3 x 3 voxel clip at 3071 HU), and the field error against the true field in the fixed liver, the
RMSD and the liver Dice of both are printed as JSON lines.

    python benchmarks/registration/padding.py --seeds 1-6 --modes image-based,cnn-guided,cnn-lm-guided
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from run import field_error, guidance, seed_range
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.phantom.deform import true_displacement
from sirtjax.registration.evaluate import evaluate
from sirtjax.registration import PRESETS, register
from sirtjax.volume import Volume

PADDING_HU = -3024.0
METAL_HU = 3071.0


def scanner_ct(ct: Volume) -> Volume:
    """The CT with air outside the reconstruction circle (radius 0.48 of the smaller in-plane size) at -3024 HU
    and a 3 x 3 x 3 voxel metal clip at 3071 HU next to the centre."""
    a = np.asarray(ct.array, np.float32).copy()
    nz, ny, nx = a.shape
    y, x = np.mgrid[:ny, :nx]
    outside = np.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2) > 0.48 * min(ny, nx)
    a[outside[None] & (a < -900)] = PADDING_HU
    a[nz // 2 : nz // 2 + 3, ny // 2 + 20 : ny // 2 + 23, nx // 2 - 30 : nx // 2 - 27] = METAL_HU
    return ct.with_array(a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1-6")
    ap.add_argument("--modes", default="image-based,cnn-guided,cnn-lm-guided")
    ap.add_argument("--key", type=int, default=0, help="PRNG key of the random samples")
    a = ap.parse_args()
    for seed in seed_range(a.seeds):
        study = generate_study(seed, PhantomConfig())
        im = study.images
        fixed, moving = im["maa_ct"], im["diag_ct"]
        truth = true_displacement(study.truth, fixed, moving="diag_ct")
        versions = (("clean", moving), ("scanner", scanner_ct(moving)))
        for mode in a.modes.split(","):
            kw = guidance(mode, im["maa_ct_labels"], im["diag_ct_labels"], im["maa_ct_liver"], im["diag_ct_liver"])
            row = {"seed": seed, "mode": mode}
            for name, mv in versions:
                res = register(fixed, mv, config=PRESETS[mode], key=jax.random.key(a.key), **kw)
                ev = evaluate(res.displacement, im["maa_ct_labels"], im["diag_ct_labels"])
                row[name] = {"field_err_mm": round(field_error(res.displacement, truth, im["maa_ct_liver"])["field_err_mm"], 3),
                             "rmsd_mm": round(ev["rmsd_mm"], 3), "dice_liver": round(ev["dice_liver"], 4)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

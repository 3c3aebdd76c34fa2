"""ANTs SyN on one pair of files as a user of ANTsPy runs it: read, register, write the warped image and the transforms.

    python benchmarks/registration/ants_user.py FIXED MOVING FIXED_MASK MOVING_MASK OUT

One process a pair, as ``sirtjax register`` runs: this file imports ANTsPy and numpy only. As in ``run.py``'s
``run_ants``, the moving image starts translated by the liver masks' centres of mass (ANTs' default start, the
images' intensity centres, fails on CTs in Hounsfield units) and the metric is confined to the fixed liver mask
grown by 15 mm. Writes ``OUT/warped.nii.gz``, ANTs' transforms (``OUT/warp.nii.gz``, ``OUT/affine.mat``) and, after
the user's part is timed, ``OUT/liver_warped.nii.gz`` (the moving mask by nearest neighbour, for scoring). Prints
one JSON line: ``user_s``, the seconds from the first import to the outputs written.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import json
import shutil
import sys
from pathlib import Path

import ants
import numpy as np


def main() -> None:
    """Register, write, time, then write the scoring output."""
    fixed_path, moving_path, fixed_mask_path, moving_mask_path, out = sys.argv[1:6]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving = ants.image_read(fixed_path), ants.image_read(moving_path)
    fixed_mask, moving_mask = ants.image_read(fixed_mask_path), ants.image_read(moving_mask_path)
    shift = np.asarray(ants.get_center_of_mass(moving_mask)) - np.asarray(ants.get_center_of_mass(fixed_mask))
    moving.set_origin(tuple(np.asarray(moving.origin) - shift))
    moving_mask.set_origin(moving.origin)
    radius = max(1, int(round(15.0 / min(fixed_mask.spacing))))
    metric_mask = ants.morphology(fixed_mask, "dilate", radius, mtype="binary")
    reg = ants.registration(fixed, moving, type_of_transform="SyN", initial_transform="Identity", mask=metric_mask)
    ants.image_write(reg["warpedmovout"], str(out / "warped.nii.gz"))
    for src, name in zip(reg["fwdtransforms"], ("warp.nii.gz", "affine.mat")):
        shutil.copy(src, out / name)
    user_s = time.perf_counter() - START
    warped = ants.apply_transforms(fixed, moving_mask, reg["fwdtransforms"], interpolator="nearestNeighbor")
    ants.image_write(warped, str(out / "liver_warped.nii.gz"))
    print(json.dumps({"user_s": round(user_s, 3)}))


if __name__ == "__main__":
    main()

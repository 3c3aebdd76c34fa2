"""Accuracy of a registration against reference label maps (thesis 5.3.4), using sirtjax.metrics."""

from __future__ import annotations

import numpy as np

from sirtjax import metrics
from sirtjax.registration.warp import warp_volume
from sirtjax.volume import Volume


def evaluate(displacement: Volume, fixed_labels: Volume, moving_labels: Volume, *, liver_label: int = 1) -> dict:
    """Liver Dice, RMSD parts (MSD, MCD per landmark, mm) and liver folding of a registration.

    The moving label map (liver ``liver_label``, landmarks their own ids) is warped by nearest
    neighbour through the field (z, y, x, 3 mm on the fixed grid) and compared with the fixed one;
    folding is the fraction of fixed-liver voxels with Jacobian determinant <= 0.
    """
    warped = warp_volume(moving_labels, displacement, order=0)
    liver_f = np.asarray(fixed_labels.array) == liver_label
    liver_w = np.asarray(warped.array) == liver_label
    r = metrics.rmsd(warped, fixed_labels, liver_label=liver_label)
    jac = metrics.jacobian_stats(displacement, liver_f).to_dict()
    return {
        "dice_liver": float(metrics.dice(liver_w, liver_f)),
        "rmsd_mm": r.rmsd_mm,
        "msd_mm": r.msd_mm,
        "mcd_mm": {int(k): float(v) for k, v in r.mcd_mm.items()},
        "folding_liver": jac["fraction_nonpositive"],
        "jacobian_liver": jac,
    }

"""Weight tuning as in thesis 5.3.4 and the accuracy it is scored by (:func:`evaluate`): RRMSD of every (w_I, w_S) over a set of cases, batched.

The affine stage does not depend on the weights, so it runs once per case; the config's main non-rigid stage
(:attr:`RegistrationConfig.main_stage`; its images-only stages do not run) then runs for every (case, w_I, w_S) combination as one vmapped batch (split into chunks of at most
``max_batch`` members to bound memory). Each registration is scored by its RMSD (liver MSD and
landmark MCDs) against the fixed label map, and each weight pair by the RRMSD over the cases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.registration.nonrigid import Weights
from sirtjax.registration.api import finish
from sirtjax.registration.config import RegistrationConfig
from sirtjax.registration.levels import Pair, affine_start, prepare_levels, with_affine
from sirtjax.registration.stages import run_affine, run_nonrigid
from sirtjax import metrics
from sirtjax.registration.warp import warp_volume
from sirtjax.volume import Volume


def grid_search(
    pairs: Sequence[Pair],
    fixed_labels: Sequence[Volume],
    moving_labels: Sequence[Volume],
    w_image: Sequence[float],
    w_seg: Sequence[float],
    config: RegistrationConfig = RegistrationConfig(),
    *,
    key: jax.Array | None = None,
    max_batch: int = 16,
) -> dict:
    """RRMSD (mm) of each (w_I, w_S) over the cases; pairs of equal shapes (see register_batch).

    Returns ``{"w_image": [...], "w_seg": [...], "rrmsd_mm": (n_I, n_S) array,
    "rmsd_mm": (n_I, n_S, n_cases) array, "best": (w_I, w_S)}``.
    """
    key = jax.random.key(0) if key is None else key
    n_cases, wi, ws = len(pairs), np.asarray(w_image, np.float32), np.asarray(w_seg, np.float32)
    stage = config.main_stage
    if np.any(wi > 0) and not stage.image_term:
        stage = dataclasses.replace(stage, image_term=True)  # a preset without the image term, searched with it
    levels = prepare_levels(pairs, config)
    k1, k2 = jax.random.split(key)
    affine, _ = run_affine(levels, affine_start(pairs, config), config, k1)
    levels = with_affine(levels, affine)
    combos = [(i, j, c) for i in range(len(wi)) for j in range(len(ws)) for c in range(n_cases)]
    rmsd = np.full((len(wi), len(ws), n_cases), np.nan)
    for start in range(0, len(combos), max_batch):
        chunk = combos[start : start + max_batch]
        cases = np.asarray([c for _, _, c in chunk])
        data = [jax.tree.map(lambda x: x[cases], lv) for lv in levels]
        weights = Weights(jnp.asarray(wi[[i for i, _, _ in chunk]]), jnp.asarray(ws[[j for _, j, _ in chunk]]),
                          jnp.full((len(chunk),), stage.w_reg, jnp.float32))
        k2, sub = jax.random.split(k2)
        residual, _ = run_nonrigid(data, weights, stage, config, sub)
        for m, (i, j, c) in enumerate(chunk):
            res = finish(pairs[c], jax.tree.map(lambda x: x[c], affine), jax.tree.map(lambda x: x[m], residual), [])
            rmsd[i, j, c] = evaluate(res.displacement, fixed_labels[c], moving_labels[c])["rmsd_mm"]
    rr = np.sqrt(np.mean(rmsd**2, axis=-1))
    bi, bj = np.unravel_index(np.argmin(rr), rr.shape)
    return {"w_image": wi.tolist(), "w_seg": ws.tolist(), "rrmsd_mm": rr, "rmsd_mm": rmsd,
            "best": (float(wi[bi]), float(ws[bj]))}


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

"""register(): affine then non-rigid registration of a fixed and a moving Volume, batched over pairs.

The pipeline (thesis 5.3.3, paper 001): a pyramid of resolutions (coarsest first); an
affine stage on every level (MI on the images, or overlap SSD on masks / label maps), started from
the centres of mass with a few candidate starts at the coarsest level; then each non-rigid stage on
its finest levels, minimising ``w_I L_I + w_S L_S + w_R L_R``. Every level runs
one jit-compiled step vmapped over the batch of pairs (and over weight settings); the Python loop
around it decides convergence. Pairs in one batch may differ in shape, spacing, origin and direction (each level is
padded to the batch's largest; the pyramid's resolutions are the first pair's). The settings: :mod:`~sirtjax.registration.config`
and :mod:`~sirtjax.registration.presets`; the batch: :mod:`~sirtjax.registration.levels`; the stages:
:mod:`~sirtjax.registration.stages`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from sirtjax import keys
from sirtjax.buckets import bucket_grid, bucket_volume
from sirtjax.programs import Program, ProgramCache
from sirtjax.registration.config import RegistrationConfig
from sirtjax.registration.levels import Pair, affine_start, make_pair, pair_pyramids, prepare_levels, take
from sirtjax.registration.optimise import LevelLog, Progress
from sirtjax.registration.nonrigid import Weights, field_volume
from sirtjax.registration.stages import expect_registration, nonrigid_runs, run_affine, run_nonrigid_stages
from sirtjax.registration.warp import AffineTransform, affine_displacement, resample_field, sample_channels
from sirtjax.timing import timed
from sirtjax.volume import Grid, Volume, make_volume, world_grid


@dataclasses.dataclass
class RegistrationResult:
    """One pair's result: the affine, the full displacement field and warped images, and diagnostics."""

    affine: AffineTransform
    displacement: Volume  # (z, y, x, 3) mm on the fixed grid, ITK convention
    warped: Volume  # moving image on the fixed grid, float32, linear
    diagnostics: dict


def register(
    fixed: Volume,
    moving: Volume,
    *,
    fixed_mask: Volume | None = None,
    moving_mask: Volume | None = None,
    fixed_labels: Volume | None = None,
    moving_labels: Volume | None = None,
    config: RegistrationConfig = RegistrationConfig(),
    weights: Weights | None = None,
    key: jax.Array | None = None,
    progress: Progress | None = None,
    programs: ProgramCache | None = None,
) -> RegistrationResult:
    """Register moving onto fixed (affine then non-rigid); the transform maps fixed world mm to moving.

    Masks (0/1) guide with the CNN-guided loss, label maps (liver 1, landmarks >= 2, the same id in
    both) with the CNN&LM-guided loss. Returns the affine, the displacement field on the fixed grid
    (ITK convention), the warped moving image and per-level diagnostics. ``programs``: where compiled programs are
    kept across calls and processes (:class:`~sirtjax.programs.ProgramCache`; None: in memory only).
    """
    pair = make_pair(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask,
                     fixed_labels=fixed_labels, moving_labels=moving_labels)
    return register_batch([pair], config, weights=weights, key=key, progress=progress, programs=programs)[0]


def register_batch(
    pairs: Sequence[Pair],
    config: RegistrationConfig = RegistrationConfig(),
    *,
    weights: Weights | None = None,
    key: jax.Array | None = None,
    progress: Progress | None = None,
    programs: ProgramCache | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> list[RegistrationResult]:
    """Register a batch of pairs in one vmapped optimisation per level.

    Args:
      pairs: from :func:`make_pair`, all guided or all unguided; grids may differ (each level is padded to the
        batch's largest), but the pyramid's resolutions are the first pair's.
      config: static settings (see :class:`RegistrationConfig` and :data:`PRESETS`).
      weights: the loss weights of the non-rigid stages on the pairs' own levels, scalars or (B,) arrays; None:
        each stage's own.
      key: PRNG key for the random similarity samples (grids above ``samples`` voxels).
      progress: optional callback(label, iteration, max_iterations).
      programs: the compiled programs' cache (:class:`~sirtjax.programs.ProgramCache`), or None.
      sharding: where the batched level data and weights live, e.g. a ``NamedSharding`` that splits the batch
        axis over a mesh of devices (the batch a multiple of its size); the programs follow their inputs
        (GSPMD). None: the default device.

    Returns:
      One :class:`RegistrationResult` per pair.
    """
    if sharding is not None and programs is not None and len(sharding.device_set) > 1:
        raise ValueError("a ProgramCache holds one-device executables: pass programs=None with a multi-device sharding")
    key = keys.key(0) if key is None else key
    batch = len(pairs)
    if weights is not None:
        weights = jax.tree.map(lambda w: np.broadcast_to(np.asarray(w, np.float32), (batch,)), weights)
        weights = weights if sharding is None else jax.device_put(weights, sharding)
    seconds: dict[str, float] = {}
    with timed(seconds, "pyramids"):
        pyramids = pair_pyramids(pairs, config, programs)
    with timed(seconds, "levels"):
        levels = prepare_levels(pairs, config, pyramids, programs, sharding)
        runs = nonrigid_runs(pairs, levels, weights, config, pyramids, programs, sharding)
        start = affine_start(pairs, config)
        k1, k2 = keys.split(key, programs)
        expect_registration(levels, start, runs, config, key, programs)
    with timed(seconds, "affine"):
        affine, logs = run_affine(levels, start, config, k1, progress, programs)
    with timed(seconds, "nonrigid"):
        residual, nlogs = run_nonrigid_stages(runs, affine, config, k2, progress, programs)
        if residual is None:  # the affine alone
            residual = field_volume(np.zeros(levels[-1].fixed.array.shape[:4] + (3,), np.float32), levels[-1].fixed, 1)
        affine, residual = jax.device_get((affine, residual))  # one copy to the host, then per-pair views
    stages = [("affine", lg) for lg in logs] + nlogs
    with timed(seconds, "finish"):
        results = [finish(p, take(affine, i), take(residual, i), [(s, lg, i) for s, lg in stages], programs)
                   for i, p in enumerate(pairs)]
    for result in results:
        result.diagnostics["seconds"] = dict(seconds)
    return results


def finish(pair: Pair, affine: AffineTransform, residual: Volume, stages: list,
           programs: ProgramCache | None = None) -> RegistrationResult:
    """Assemble one pair's result from its affine and residual field (on its level grid): full-resolution
    field, warped moving image and diagnostics.

    The fixed grid and the moving image (by its border voxels, its true size kept for the outside test) are padded
    at their high end to :func:`~sirtjax.buckets.grid_bucket` shapes and the results cut back, so patients with similar
    grids share the compiled program.
    """
    fixed, moving = pair.fixed, pair.moving
    field, warped = _finish_arrays(affine, residual, bucket_grid(fixed), bucket_volume(moving, "edge", np.float32),
                                   np.asarray(moving.shape[::-1], np.float32), programs=programs)
    cut = tuple(slice(0, n) for n in fixed.shape)
    disp = make_volume(np.asarray(field, np.float32)[cut], fixed.spacing_mm, fixed.origin_mm, fixed.direction)
    warped = make_volume(np.asarray(warped, np.float32)[cut], fixed.spacing_mm, fixed.origin_mm, fixed.direction)
    diag = {"stages": [_stage_dict(stage, log, i) for stage, log, i in stages]}
    return RegistrationResult(affine, disp, warped, diag)


def _finish(affine: AffineTransform, residual: Volume, fixed: Grid, moving: Volume, moving_size_xyz: jax.Array):
    """Full-resolution field (z, y, x, 3) mm and the linearly warped moving image (0 outside its true size), in one
    program."""
    field = affine_displacement(affine, fixed) + resample_field(residual, fixed)
    warped, _ = sample_channels(moving, world_grid(fixed) + field, 0.0, size_xyz=moving_size_xyz)
    return field, warped


def _stage_dict(stage: str, log: LevelLog, i: int) -> dict:
    hist = log.loss_history[:, i] if log.loss_history.ndim == 2 else log.loss_history
    hist = hist[np.isfinite(hist)]
    return {
        "stage": stage,
        "level": log.label,
        "iterations": int(log.iterations[i]),
        "loss_first": float(hist[0]) if hist.size else None,
        "loss_last": float(hist[-1]) if hist.size else None,
        "terms_last": {k: float(np.asarray(v)[i]) for k, v in log.last_terms.items()},
        "compile_s": log.compile_s,
        "run_s": log.run_s,
    }


_finish_arrays = Program(_finish, "finish")

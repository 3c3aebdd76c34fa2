"""The stage drivers: the affine stage, then the non-rigid stages in turn (images-only ones and guided ones).

Each runs one jit-compiled step per level (:func:`~sirtjax.registration.optimise.run_level`),
vmapped over the batch of pairs, from coarse to fine. ``programs``: the
:class:`~sirtjax.programs.ProgramCache` their compiled programs come from (None: ``jax.jit`` alone).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax import keys
from sirtjax.programs import Program, ProgramCache
from sirtjax.registration import affine as affine_stage
from sirtjax.registration.config import NonrigidStage, RegistrationConfig
from sirtjax.registration.levels import AffineStart, Pair, prepare_levels, resolutions_mm_from_levels, with_affine
from sirtjax.registration.nonrigid import Weights, field_factor_for, field_grid, field_shape, field_volume, nonrigid_step
from sirtjax.registration.optimise import Convergence, LevelLog, Progress, expect_level, run_level
from sirtjax.registration.padding import extend, nodes_valid
from sirtjax.registration.problem import LevelData
from sirtjax.registration.warp import AffineTransform, resample_field
from sirtjax.volume import Volume


def run_affine(
    levels: list[LevelData],
    start: AffineStart,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
    programs: ProgramCache | None = None,
) -> tuple[AffineTransform, list[LevelLog]]:
    """The affine stage over all levels for a batch; returns the batched AffineTransform and the logs.

    Every candidate start (``start.translations_mm`` (B, K, 3)) runs through all levels, batched with the pairs;
    each pair keeps the candidate with the lowest mean loss over the last ``window`` steps of the
    finest level. The coarse levels' losses do not rank the candidates: on a blurred image MI
    differs little between optima (image-based MR seed 1: the coarsest level ranked the right start
    4th of 5, the finest level 1st).
    """
    batch, k = start.translations_mm.shape[:2]
    res = resolutions_mm_from_levels(levels)
    levels, params, steps, conv = _affine_levels(levels, start, config)
    logs = []
    for li, ((step, optimiser), data) in enumerate(zip(steps, levels)):
        if k > 1:
            data = _repeated(data, k, programs=programs)
        key, sub = keys.split(key, programs)
        params, log = run_level(step, params, optimiser, data, None, sub, conv, label=f"affine {res[li]:g} mm",
                                progress=progress, programs=programs)
        logs.append(log)
    if k > 1:
        best = np.argmin(_final_window_mean(logs[-1].loss_history, conv.window).reshape(batch, k), axis=1)
        pick = np.arange(batch) * k + best
        params = jax.tree.map(lambda x: np.asarray(x)[pick], params)  # on the host: no gather compiled per process
        for log in logs:
            log.iterations = log.iterations[pick]
            log.last_terms = {n: v[pick] for n, v in log.last_terms.items()}
            log.loss_history = log.loss_history[:, pick]
    return _params_to_affine(params, np.asarray(start.centre_mm, np.float32), np.asarray(start.radius_mm, np.float32),
                             programs=programs), logs


def _affine_levels(levels: list[LevelData], start: AffineStart, config: RegistrationConfig) -> tuple:
    """The affine stage's levels (centred on the start, the affine at the identity), its starting params (B K), each
    level's (step, optimiser) and its stopping rule."""
    batch, k = start.translations_mm.shape[:2]
    aff, stop = config.affine, config.early_stop
    centre, radius = np.asarray(start.centre_mm, np.float32), np.asarray(start.radius_mm, np.float32)
    at_centre = AffineTransform(np.broadcast_to(np.eye(3, dtype=np.float32), (batch, 3, 3)), np.zeros((batch, 3), np.float32),
                                centre)
    steps = [affine_stage.affine_step(config.similarity.options(aff.samples), aff.on, aff.step * r, aff.iterations,
                                      aff.max_strain, config.optimiser) for r in resolutions_mm_from_levels(levels)]
    return ([dataclasses.replace(d, affine=at_centre, radius_mm=radius) for d in levels],
            affine_stage.init_params(start.translations_mm.reshape(batch * k, 3)), steps,
            Convergence(aff.iterations, stop.window, stop.rel_tol, stop.min_iterations))


def _repeat(data: LevelData, k: int) -> LevelData:
    """Each pair's level data k times in a row (one member per candidate start)."""
    return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), data)


_repeated = Program(_repeat, "repeat per candidate", static_argnums=(1,))  # one program, not one per leaf and operation


def expect_registration(levels: list[LevelData], start: AffineStart, runs: list[tuple], config: RegistrationConfig,
                        key: jax.Array, programs: ProgramCache | None) -> None:
    """Have ``programs`` load ahead, in the order they run, the level programs of the affine stage (:func:`run_affine`)
    and of the non-rigid stages (:func:`run_nonrigid_stages`' ``runs``)."""
    if programs is None:
        return
    k = start.translations_mm.shape[1]
    affine_levels, params, steps, conv = _affine_levels(levels, start, config)
    for (step, optimiser), data in zip(steps, affine_levels):
        expect_level(step, params, optimiser, jax.eval_shape(functools.partial(_repeat, k=k), data), None, key, conv,
                     programs)
    base = None
    for stage_levels, stage_weights, stage in runs:
        base = _expect_nonrigid(stage_levels, stage_weights, stage, config, key, base, programs)


_params_to_affine = Program(jax.vmap(affine_stage.params_to_affine), "params to affine")  # one program, not one per operation


def _final_window_mean(history: np.ndarray, window: int) -> np.ndarray:
    """Per member of a (iterations, B) loss history (NaN after a member stopped): mean of its last ``window`` losses."""
    out = np.empty(history.shape[1])
    for b in range(history.shape[1]):
        h = history[:, b][np.isfinite(history[:, b])]
        out[b] = h[-window:].mean() if h.size else np.inf
    return out


def run_nonrigid(
    levels: list[LevelData],
    weights: Weights,
    stage: NonrigidStage,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
    base: Volume | None = None,
    label: str = "non-rigid",
    programs: ProgramCache | None = None,
) -> tuple[Volume, list[LevelLog]]:
    """One non-rigid stage of ``config`` on the finest ``stage.levels`` levels (affine already set in levels).

    ``base``: a batched residual field Volume from an earlier stage; this stage adds its own field to
    it, and its springs resist only its own (the base is their rest state). Returns the whole residual
    field, a batched Volume (B, z, y, x, 3) mm on the finest level's field grid, and the logs. Raises
    ValueError when an image weight is positive but the stage leaves the image term out, or for a B-spline field
    on top of an earlier stage's.
    """
    if not stage.image_term and np.any(np.asarray(weights.image) > 0):
        raise ValueError("a positive image weight w_I needs the non-rigid image term (image_term=True)")
    order = stage.field_order
    if order == 3 and base is not None:
        raise ValueError("field_order 3 (a B-spline) is for the first non-rigid stage only")
    use, res, factors, steps, conv = _stage_levels(levels, stage, config)
    v = np.zeros(_field_shape(use[0], factors[0]), np.float32)
    logs = []
    valid = [np.asarray(d.fixed_size_zyx) for d in use]  # (B, 3) valid voxels of each level's (padded) box
    for li, data in enumerate(use):
        if li > 0:  # B-spline coefficients: the coarse spline's values at the new nodes start the finer level
            v = _upsample(*_refine_args(v, use, valid, factors, li, order), programs=programs)
        if base is not None:
            data = dataclasses.replace(data, base_field=_upsample(*_base_args(base, data, valid[li], factors[li]),
                                                                  programs=programs))
        step, optimiser = steps[li]
        key, sub = keys.split(key, programs)
        v, log = run_level(step, v, optimiser, data, weights, sub, conv, label=f"{label} {res[li]:g} mm", progress=progress,
                           programs=programs)
        logs.append(log)
    finest, f = use[-1].fixed, factors[-1]
    if order == 3:
        args = _dense_args(v, use, valid, factors)
        return field_volume(_upsample(*args, programs=programs), finest, args[4]), logs
    total = np.asarray(data.base_field) + np.asarray(v)  # on the host: the padding clamped to the valid nodes
    return field_volume(np.stack([extend(t, n, xp=np) for t, n in zip(total, nodes_valid(valid[-1], f))]), finest, f), logs


def _stage_levels(levels: list[LevelData], stage: NonrigidStage, config: RegistrationConfig) -> tuple:
    """The levels a non-rigid stage runs on, their resolutions (mm) and field factors, each level's (step, optimiser),
    and the stopping rule."""
    use = levels[len(levels) - min(stage.levels, len(levels)):]
    seg = int(use[0].fixed.array.shape[-1]) > 1
    res = resolutions_mm_from_levels(use)
    factors = [field_factor_for(stage.field_spacing_mm, r) for r in res]
    steps = [nonrigid_step(config.similarity.options(stage.samples), config.regulariser_options(stage), stage.image_term,
                           seg, stage.step * r, stage.iterations, f, stage.field_order, config.optimiser)
             for r, f in zip(res, factors)]
    return use, res, factors, steps, stage.convergence(config.early_stop)


def _field_shape(level: LevelData, factor: int) -> tuple[int, ...]:
    """(B, z', y', x', 3): the batched field (or B-spline coefficients) of a level whose nodes are ``factor`` voxels apart."""
    return level.fixed.array.shape[:1] + field_shape(level.fixed.array.shape[1:4], factor) + (3,)


def _expect_nonrigid(levels: list[LevelData], weights: Weights, stage: NonrigidStage, config: RegistrationConfig,
                     key: jax.Array, base: Volume | None, programs: ProgramCache) -> Volume:
    """Have ``programs`` obtain ahead the programs :func:`run_nonrigid` will run on top of an earlier stage's field
    ``base`` (None: none), abstract arrays allowed; returns the stage's field as :func:`run_nonrigid` will (abstract)."""
    use, _, factors, steps, conv = _stage_levels(levels, stage, config)
    valid = [np.asarray(d.fixed_size_zyx) for d in use]
    fields = [jax.ShapeDtypeStruct(_field_shape(d, f), jnp.float32) for d, f in zip(use, factors)]
    for li, (data, field, (step, optimiser)) in enumerate(zip(use, fields, steps)):
        if li > 0:
            programs.expect(_upsample, _refine_args(fields[li - 1], use, valid, factors, li, stage.field_order))
        if base is not None:
            programs.expect(_upsample, _base_args(base, data, valid[li], factors[li]))
        expect_level(step, field, optimiser, data if base is None else dataclasses.replace(data, base_field=field),
                     weights, key, conv, programs)
    if stage.field_order == 3:
        args = _dense_args(fields[-1], use, valid, factors)
        programs.expect(_upsample, args)
        return field_volume(jax.ShapeDtypeStruct(_field_shape(use[-1], args[4]), jnp.float32), use[-1].fixed, args[4])
    return field_volume(fields[-1], use[-1].fixed, factors[-1])


def _base_args(base: Volume, data: LevelData, valid: np.ndarray, factor: int) -> tuple:
    """The arguments of :data:`_upsample` that put an earlier stage's field on a level's nodes."""
    return base, _all_nodes(base), data.fixed, valid, factor


def _refine_args(v, use: list[LevelData], valid: list[np.ndarray], factors: list[int], li: int, order: int) -> tuple:
    """The arguments of :data:`_upsample` that start level ``li`` from level ``li - 1``'s field (or coefficients) v."""
    return (field_volume(v, use[li - 1].fixed, factors[li - 1]), nodes_valid(valid[li - 1], factors[li - 1]), use[li].fixed,
            valid[li], factors[li], order)


def _dense_args(v, use: list[LevelData], valid: list[np.ndarray], factors: list[int]) -> tuple:
    """The arguments of :data:`_upsample` that give a B-spline stage's field: the spline's values on a grid 4x finer
    than its nodes (trilinear between them is then within a small fraction of the spline's curvature; a dense grid
    would cost 64 reads per voxel)."""
    f = factors[-1]
    return field_volume(v, use[-1].fixed, f), nodes_valid(valid[-1], f), use[-1].fixed, valid[-1], max(1, f // 4), 3


def _all_nodes(field: Volume) -> np.ndarray:
    """(B, 3) node counts of a batched field Volume whose nodes are all valid (clamped already past its valid ones)."""
    return np.broadcast_to(np.asarray(field.array.shape[1:4]), (field.array.shape[0], 3))


def nonrigid_runs(pairs: Sequence[Pair], levels: list[LevelData], weights: Weights | None, config: RegistrationConfig,
                  pyramids: Sequence[tuple[list[Volume], list[Volume]]] | None = None,
                  programs: ProgramCache | None = None, sharding: jax.sharding.Sharding | None = None) -> list[tuple]:
    """(levels, (B,) weights, stage) of each of ``config.stages``: the stages on the pairs' own levels run on ``levels``
    with ``weights`` (None: each stage's own), images-only stages on the pairs' images alone (their levels built
    here, from ``pyramids``, the pairs' :func:`pair_pyramids` if computed already) with their own weights."""
    plain = None
    if any(s.images_only for s in config.stages):
        plain = prepare_levels(pairs, config, pyramids, programs, sharding, images_only=True)
    return [(plain if s.images_only else levels, _stage_weights(s, weights, len(pairs)), s) for s in config.stages]


def run_nonrigid_stages(
    runs: list[tuple],
    affine: AffineTransform,
    config: RegistrationConfig,
    key: jax.Array,
    progress: Progress | None = None,
    programs: ProgramCache | None = None,
) -> tuple[Volume | None, list[tuple[str, LevelLog]]]:
    """Everything after the affine stage: each stage of :func:`nonrigid_runs` in turn from ``affine``, each adding its
    field to the earlier ones'; the batched residual field Volume (None without stages) and the (stage name, log) of
    every level. Stage names: 'image' for images-only stages, 'nonrigid' for the others."""
    field, logs = None, []
    for i, (stage_levels, stage_weights, stage) in enumerate(runs):
        key, sub = keys.split(key, programs) if i + 1 < len(runs) else (None, key)
        field, stage_logs = run_nonrigid(with_affine(stage_levels, affine), stage_weights, stage, config, sub, progress,
                                         base=field, label="image" if stage.images_only else "non-rigid", programs=programs)
        logs += [("image" if stage.images_only else "nonrigid", lg) for lg in stage_logs]
    return field, logs


def _stage_weights(stage: NonrigidStage, weights: Weights | None, batch: int) -> Weights:
    """A stage's (B,) loss weights: ``weights`` for a stage on the pairs' own levels when given, else its own."""
    if weights is not None and not stage.images_only:
        return weights
    return jax.tree.map(lambda w: np.broadcast_to(w, (batch,)), stage.weights())


def _upsample_field(coarse: Volume, coarse_nodes: jax.Array, fine_level: Volume, fine_valid: jax.Array, factor: int,
                    order: int = 1) -> jax.Array:
    """A batched field Volume (values, or B-spline coefficients for ``order`` 3) resampled onto the field grid
    of a batched level grid with ``factor``: its values there (mm). ``coarse_nodes`` (B, 3): the field's valid
    nodes, ``fine_valid`` (B, 3): the level's valid voxels; past them the values are clamped to the valid ones."""
    def one(c, nodes, f, valid):
        return extend(resample_field(c.with_array(extend(c.array, nodes)), field_grid(f, factor), order),
                      nodes_valid(valid, factor))

    return jax.vmap(one)(coarse, coarse_nodes, fine_level, fine_valid)


_upsample = Program(_upsample_field, "upsample field", static_argnums=(4, 5))

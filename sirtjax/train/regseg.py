"""Training of the joint registration-segmentation network (paper 004), cascade by cascade.

Config (JSON, ``"model": {"arch": "regseg", ...}``; defaults in :class:`RegSegTrainConfig`):
``model`` (the spec saved with the weights: features, cascades, scale_mm, spacing_mm (x, y, z));
``train_seeds``, ``val_seeds`` and ``inter_offsets`` (phantom pairs, :mod:`sirtjax.train.regseg_data`);
``crop`` (z, y, x network-grid voxels); ``batch_size`` of which ``n_phantom`` phantom pairs and the
rest synthetic pairs (:func:`sirtjax.train.synth.synth_pairs` from the canonical maps of
``synth_seeds``, generator settings ``synth``); ``epochs``; ``steps_per_cascade``; ``learning_rate``;
loss weights ``w_mi``, ``w_dice`` and ``w_bend``; ``mi_samples``; ``seed``; ``init_from``.

Loss: ``-w_mi MI(fixed, warped) + w_dice (1 - soft Dice(warped liver, fixed liver)) + w_bend bending``,
the registration core's Mattes MI (32 bins, on ``mi_samples`` random voxels of each pair) and
bending energy (1/mm^2), and the segmentation losses' soft Dice.

Schedule, as the paper: every epoch trains cascade 0 for ``steps_per_cascade`` steps, then cascade 1
with cascade 0 frozen and cascade 2 not run, then cascade 2. Each cascade has its own Adam state.
After each epoch the validation pairs (intra-patient, whole grids) are scored by liver Dice on the
network grid. Orbax keeps the latest state after every cascade phase (re-running resumes there) and
the best by validation Dice; ``best/`` holds that model (model.json + weights.npz).
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sirtjax.errors import InputError
from sirtjax.metrics import dice
from sirtjax.models.regseg import RegSegNet, RegSegOutput
from sirtjax.models.store import build_model, load_weights, save_model
from sirtjax.registration.similarity import mattes_mi
from sirtjax.registration.regularisers import bending_energy
from sirtjax.segmentation.regseg import run_network
from sirtjax.train import checkpoint
from sirtjax.train.losses import soft_dice
from sirtjax.train.regseg_data import TrainPair, pair_seeds, phantom_pairs, random_crop
from sirtjax.train.label_maps import phantom_label_maps
from sirtjax.train.synth import SynthConfig, synth_pairs

# synthetic pairs: milder geometry than the segmentation generator (the network undoes it), no edits in patch space
PAIR_SYNTH = SynthConfig(max_rotation_deg=6.0, scale_range=(0.92, 1.08), elastic_mm=6.0, ascites_prob=0.0, resection_prob=0.0,
                         fov_cut_prob=0.0)


class LossWeights(NamedTuple):
    """The loss's weights (traced: changing them does not recompile the step)."""

    w_mi: float
    w_dice: float
    w_bend: float


@dataclasses.dataclass(frozen=True)
class RegSegTrainConfig:
    """All settings of one RegSegNet training run (module docstring)."""

    model: dict[str, Any]
    train_seeds: tuple[int, ...]
    val_seeds: tuple[int, ...]
    inter_offsets: tuple[int, ...] = (1, 3)
    crop: tuple[int, int, int] = (48, 72, 80)
    batch_size: int = 2
    n_phantom: int = 1
    synth_seeds: tuple[int, ...] = ()
    synth: SynthConfig = PAIR_SYNTH
    epochs: int = 10
    steps_per_cascade: int = 20
    learning_rate: float = 1e-3
    w_mi: float = 1.0
    w_dice: float = 1.0
    w_bend: float = 10.0
    mi_samples: int = 8192
    seed: int = 0
    init_from: str | None = None

    def loss_weights(self) -> LossWeights:
        """The loss weights."""
        return LossWeights(float(self.w_mi), float(self.w_dice), float(self.w_bend))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """The network grid's spacing (x, y, z) mm."""
        return tuple(float(s) for s in self.model["spacing_mm"])  # type: ignore[return-value]


def parse_regseg_config(raw: dict[str, Any], source: str = "config") -> RegSegTrainConfig:
    """Validate a config dict (JSON lists become tuples; keys starting with '_' are comments)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if not k.startswith("_")}
    try:
        synth = dataclasses.replace(PAIR_SYNTH, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.pop("synth", {}).items()})
        cfg = RegSegTrainConfig(**values, synth=synth)
        levels = len(cfg.model.get("features", ()))
        checks = [
            (cfg.model.get("arch") == "regseg" and levels > 0 and len(cfg.model.get("spacing_mm", ())) == 3
             and len(cfg.model.get("grid_zyx", ())) == 3, "model needs arch 'regseg', features, spacing_mm (x, y, z) and grid_zyx"),
            (all(int(n) % 2 ** (levels - 1) == 0 for n in (*cfg.model["grid_zyx"], *cfg.crop)),
             "grid_zyx and crop must be multiples of the U-Nets' down-sampling, 2 ** (levels - 1)"),
            (len(cfg.train_seeds) > 0 and len(cfg.val_seeds) > 0, "train_seeds and val_seeds must not be empty"),
            (not set(cfg.train_seeds) & set(cfg.val_seeds), "train_seeds and val_seeds must not overlap"),
            (0 < cfg.n_phantom <= cfg.batch_size, "n_phantom must be in [1, batch_size]"),
            (cfg.n_phantom == cfg.batch_size or len(cfg.synth_seeds) > 0, "synthetic pairs need synth_seeds"),
            (cfg.n_phantom == cfg.batch_size or len(set(cfg.spacing_mm)) == 1, "synthetic pairs need an isotropic spacing_mm"),
            (cfg.epochs > 0 and cfg.steps_per_cascade > 0 and cfg.learning_rate > 0, "epochs, steps_per_cascade and learning_rate must be positive"),
            (len(cfg.crop) == 3 and min(cfg.crop) > 0, "crop needs 3 positive sizes (z, y, x)"),
        ]
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise InputError(source, f"bad config value: {exc}") from exc
    for ok, problem in checks:
        if not ok:
            raise InputError(source, problem)
    return dataclasses.replace(cfg, crop=tuple(int(n) for n in cfg.crop))


def regseg_loss(key: jax.Array, fixed: jax.Array, fixed_mask: jax.Array, out: RegSegOutput, spacing_mm, weights: LossWeights,
                mi_samples: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's mean loss and its terms (module docstring)."""
    n = fixed.shape[0]
    idx = jax.random.randint(key, (n, mi_samples), 0, fixed[0].size)
    f = jnp.take_along_axis(fixed.reshape(n, -1), idx, axis=1)
    w = jnp.take_along_axis(out.warped.reshape(n, -1), idx, axis=1)
    window = (jnp.float32(-0.5), jnp.float32(0.5))
    mi = jax.vmap(lambda a, b: mattes_mi(a, b, jnp.ones_like(a), fixed_range=window, moving_range=window))(f, w)
    dsc = soft_dice(out.warped_mask, fixed_mask)
    bend = jax.vmap(lambda u: bending_energy(u, jnp.asarray(spacing_mm, jnp.float32)))(out.displacement_mm)
    terms = {"mi": jnp.mean(mi), "dice": jnp.mean(dsc), "bending": jnp.mean(bend)}
    return -weights.w_mi * terms["mi"] + weights.w_dice * (1.0 - terms["dice"]) + weights.w_bend * terms["bending"], terms


def _with_cascade(state: nnx.State, c: int, params: nnx.State) -> nnx.State:
    """A copy of the model state with cascade c's parameters replaced."""
    new = jax.tree.map(lambda x: x, state)
    new["cascades"][c] = params
    return new


@partial(jax.jit, static_argnames=("graphdef", "c", "mi_samples", "spacing_mm"))
def cascade_step(state: nnx.State, opt_c: Any, batch: tuple[jax.Array, ...], key: jax.Array, *, graphdef: nnx.GraphDef, c: int,
                 learning_rate: float, weights: LossWeights, mi_samples: int, spacing_mm: tuple[float, float, float]
                 ) -> tuple[nnx.State, Any, dict]:
    """One Adam step of cascade c alone (earlier cascades frozen, later ones not run) on a batch (fixed, fixed liver,
    moving, moving liver); returns the new model state, cascade c's Adam state and the loss terms."""
    fixed, fixed_mask, moving, moving_mask = batch

    def objective(params):
        out = nnx.merge(graphdef, _with_cascade(state, c, params))(fixed, moving, moving_mask, spacing_mm, upto=c + 1, frozen=c)
        loss, terms = regseg_loss(key, fixed, fixed_mask, out, spacing_mm, weights, mi_samples)
        return loss, {**terms, "loss": loss}

    params = state["cascades"][c]
    grads, terms = jax.grad(objective, has_aux=True)(params)
    updates, opt_c = optax.adam(learning_rate).update(grads, opt_c, params)
    return _with_cascade(state, c, optax.apply_updates(params, updates)), opt_c, terms


def validate(model: RegSegNet, pairs: list[TrainPair], spacing_mm) -> dict[str, float]:
    """Liver Dice (warped moving liver >= 0.5 against the fixed liver) of whole pairs on the network grid."""
    graphdef, state = nnx.split(model)
    spacing = tuple(float(s) for s in spacing_mm)

    def warped_mask(p: TrainPair) -> np.ndarray:
        out = run_network(state, p.fixed[None], p.moving[None], p.moving_mask[None], graphdef=graphdef, spacing_mm=spacing)
        return np.asarray(out.warped_mask)[0]

    return {p.name: dice(warped_mask(p) >= 0.5, p.fixed_mask > 0) for p in pairs}


def _batch(rng: np.random.Generator, key: jax.Array, pairs: list[TrainPair], maps, source_mm: float, cfg: RegSegTrainConfig):
    """One batch (fixed, fixed liver, moving, moving liver), each (B, *crop): phantom crops, then synthetic pairs."""
    crops = [random_crop(rng, pairs[rng.integers(len(pairs))], cfg.crop) for _ in range(cfg.n_phantom)]
    parts = [jnp.asarray(np.stack(arrays)) for arrays in zip(*crops)]
    if cfg.batch_size > cfg.n_phantom:
        synth = synth_pairs(key, maps, batch_size=cfg.batch_size - cfg.n_phantom, patch=cfg.crop, spacing_mm=cfg.spacing_mm[0],
                            source_mm=source_mm, cfg=cfg.synth)
        parts = [jnp.concatenate([p, s]) for p, s in zip(parts, synth)]
    return tuple(parts)


def train_regseg(cfg: RegSegTrainConfig, out_dir: str | Path, *, pairs: tuple[list[TrainPair], list[TrainPair]] | None = None,
                 stop_after_phases: int | None = None, progress=print) -> dict[str, Any]:
    """Train (or resume) in out_dir; returns {'epochs', 'best_val_dice', 'out_dir', 'params'}.

    ``pairs`` (train, validation) replaces the phantom pairs of cfg; ``stop_after_phases`` ends after that many
    cascade phases of this call (to test resuming after a kill).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    key = jax.random.key(cfg.seed)
    model = build_model(cfg.model, rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
    latest, best = checkpoint.managers(out)
    if cfg.init_from is not None and latest.latest_step() is None:
        load_weights(model, cfg.init_from)
    if pairs is None:
        shape = cfg.model["grid_zyx"]
        pairs = (phantom_pairs(pair_seeds(cfg.train_seeds, cfg.inter_offsets), cfg.spacing_mm, shape, cache),
                 phantom_pairs([(s, s) for s in cfg.val_seeds], cfg.spacing_mm, shape, cache))
    train_pairs, val_pairs = pairs
    maps, source_mm = (None, 0.0) if cfg.batch_size == cfg.n_phantom else phantom_label_maps(cfg.synth_seeds, [{}], cache)
    graphdef, params = nnx.split(model)
    n_casc = len(model.cascades)
    state = {"params": params, "opt": [optax.adam(cfg.learning_rate).init(params["cascades"][c]) for c in range(n_casc)],
             "meta": np.array([0], np.int64), "best": np.array(-1.0, np.float32)}
    restored = checkpoint.restore_latest(latest, state)
    state = state if restored is None else restored
    params, opts, best_dice = state["params"], list(state["opt"]), float(state["best"])
    step_fn = partial(cascade_step, graphdef=graphdef, learning_rate=cfg.learning_rate, weights=cfg.loss_weights(),
                      mi_samples=cfg.mi_samples, spacing_mm=cfg.spacing_mm)
    log = out / "metrics.jsonl"
    phase, done_here, t0 = int(state["meta"][0]), 0, time.perf_counter()
    while phase < cfg.epochs * n_casc:
        if stop_after_phases is not None and done_here >= stop_after_phases:
            break
        epoch, c = divmod(phase, n_casc)
        rng = np.random.default_rng([cfg.seed, phase])
        terms = {}
        for i in range(cfg.steps_per_cascade):
            k = jax.random.fold_in(jax.random.fold_in(key, 2), phase * cfg.steps_per_cascade + i)
            batch = _batch(rng, jax.random.fold_in(k, 0), train_pairs, maps, source_mm, cfg)
            params, opts[c], terms = step_fn(params, opts[c], batch, jax.random.fold_in(k, 1), c=c)
        phase, done_here = phase + 1, done_here + 1
        record = {"epoch": epoch, "cascade": c, "phase": phase, **{k: round(float(v), 5) for k, v in terms.items()},
                  "time_s": round(time.perf_counter() - t0, 1)}
        if c == n_casc - 1:
            scores = validate(nnx.merge(graphdef, params), val_pairs, cfg.spacing_mm)
            record["val_dice"] = round(float(np.mean(list(scores.values()))), 4)
            if record["val_dice"] > best_dice:
                best_dice = record["val_dice"]
                checkpoint.save(best, phase, {"params": params}, metrics={"val_dice": best_dice})
                save_model(nnx.merge(graphdef, params), {**cfg.model, "val_dice": best_dice, "epoch": epoch + 1}, out / "best")
        checkpoint.save(latest, phase, {"params": params, "opt": opts, "meta": np.array([phase], np.int64),
                                        "best": np.array(best_dice, np.float32)})
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        progress(json.dumps(record))
    return {"epochs": phase // n_casc, "best_val_dice": best_dice, "out_dir": str(out), "params": params}

"""The training loop: data, model, jit-compiled steps, validation, checkpoints, metrics log.

Outside the pure step everything is plain Python: batches are drawn from jax.random.fold_in(key,
step), so a run resumed from the checkpoint of step s draws exactly the batches an uninterrupted
run would; the latest checkpoint is written every `checkpoint_every` steps and after each
validation; `metrics.jsonl` gets one line per logged step and per validation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from sirtjax.metrics import dice
from sirtjax.models.store import build_model, save_model, warm_start
from sirtjax.segmentation.infer import foreground, predict_array, spec_tiling
from sirtjax.segmentation.postprocess import liver_mask
from sirtjax.train import checkpoint
from sirtjax.train.augment import flip_axes
from sirtjax.train.config import TrainConfig
from sirtjax.train.data import Case, batch_sampler, make_case, msd_cases, noisy_ct_cases, phantom_cases, stack_cases
from sirtjax.train.step import data_parallel, ema_update, init_opt_state, make_optimizers, make_train_step, plateau_update
from sirtjax.train.label_maps import canonical_spacing_mm, phantom_label_maps
from sirtjax.train.synth import mixed_sampler, synth_sampler

LOG_EVERY = 10
FREEZE_BATCHES = 6  # training batches whose tiles give the statistics when init_from's instance norms are frozen


def load_cases(cfg: TrainConfig, cache_dir: Path | None) -> tuple[list[Case], list[Case]]:
    """(train, validation) cases described by cfg.data."""
    spacing = cfg.model.get("spacing_mm", (3.0, 3.0, 3.0))
    d = cfg.data
    if d["kind"] == "phantom":
        index_hu = cfg.model.get("ct_noise_index_hu") if cfg.target == "liver" else None  # CT input matched as inference matches it
        kw = dict(spacing_mm=spacing, target=cfg.target, cache_dir=cache_dir, phantom_options=d.get("phantom_options"), ct_noise_index_hu=index_hu)
        train = phantom_cases(d["train_seeds"], d["images"], image_weights=d.get("image_weights"),
                              lesion_min_cnr=float(d.get("lesion_min_cnr", 0.0)), **kw)
        val = phantom_cases(d["val_seeds"], d.get("val_images", d["images"]), **kw)
        if "noisy_ct" in d:
            n = d["noisy_ct"]
            noisy = partial(noisy_ct_cases, images=n["images"], ct_noise_hu=tuple(n["ct_noise_hu"]), spacing_mm=spacing,
                            ct_noise_index_hu=index_hu, cache_dir=cache_dir, phantom_options=d.get("phantom_options"))
            train, val = train + noisy(d["train_seeds"], weight=float(n.get("weight", 1.0))), val + noisy(d["val_seeds"])
        for v in d.get("variants", ()):  # the studies rendered again with other phantom options (a liver size, a body)
            opts = {**(d.get("phantom_options") or {}), **v["phantom_options"]}
            again = partial(phantom_cases, images=v["images"], tag=f"_{v['tag']}", **(kw | {"phantom_options": opts}))
            train = train + again(d["train_seeds"], image_weights={name: float(v.get("weight", 1.0)) for name in v["images"]})
            val = val + again(d["val_seeds"])
        return train, val + real_val_cases(cfg)
    cases = msd_cases(d["root"], modality=d.get("modality", "ct"), spacing_mm=spacing, label_values=d.get("label_values", (1,)))
    n_val = int(d.get("val_cases", max(1, len(cases) // 10)))
    if len(cases) <= n_val:
        raise ValueError(f"{len(cases)} cases cannot give {n_val} validation cases and a training set")
    return cases[n_val:], cases[:n_val]


REAL_PREFIX = "real_"  # names of validation cases from real scans (data.real_val)


def real_val_cases(cfg: TrainConfig) -> list[Case]:
    """The real scans of data.real_val as validation cases (prepared as inference prepares them; label: the liver)."""
    if "real_val" not in cfg.data:
        return []
    from sirtjax.io import read_volume
    from sirtjax.segmentation.validation import read_manifest

    scans = read_manifest(cfg.data["real_val"]["manifest"])["scans"]
    spacing = cfg.model.get("spacing_mm", (3.0, 3.0, 3.0))
    return [make_case(REAL_PREFIX + name, read_volume(scans[name]["image"]), read_volume(scans[name]["labels"]), scans[name]["modality"],
                      spacing, (int(scans[name]["liver_label"]),), ct_noise_index_hu=cfg.model.get("ct_noise_index_hu"))
            for name in cfg.data["real_val"]["scans"]]


def validation_score(scores: dict[str, float]) -> float:
    """The validation score: the mean DSC, or with real scans among the cases, the mean of the real scans' mean and
    the other cases' mean (real anatomy weighs as much as all the phantom studies together)."""
    real = [v for k, v in scores.items() if k.startswith(REAL_PREFIX)]
    other = [v for k, v in scores.items() if not k.startswith(REAL_PREFIX)]
    return float(np.mean([np.mean(g) for g in (real, other) if g]))


def make_sampler(
    cfg: TrainConfig, train_cases: Sequence[Case], in_patch: Sequence[int], out_patch: Sequence[int], cache_dir: Path | None = None
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """key -> (inputs, labels): realistic cases, or with cfg.synth, n_real of them plus synthetic patches."""
    spacing = tuple(cfg.model.get("spacing_mm", (3.0, 3.0, 3.0)))
    n_real = cfg.batch_size if cfg.synth is None else cfg.synth.n_real
    real = None
    if n_real > 0:
        real = batch_sampler(
            stack_cases(train_cases, seed=cfg.seed), batch_size=n_real, in_patch=in_patch, out_patch=out_patch,
            spacing_mm=spacing, aug=cfg.augment, foreground_prob=cfg.foreground_prob,
        )
    if cfg.synth is None:
        return real
    src = cfg.synth
    anatomy, share = [], 0.0
    if src.anatomy is not None:
        from sirtjax.segmentation.validation import read_manifest
        from sirtjax.train.anatomy import cached_real_patient, label_map_source

        manifest = read_manifest(src.anatomy.manifest)
        spacing_mm = canonical_spacing_mm(src.variants)
        anatomy = [cached_real_patient(label_map_source(manifest, name), spacing_mm, cache_dir) for name in src.anatomy.maps]
        share = src.anatomy.share
    maps, source_mm = phantom_label_maps(src.seeds, src.variants, cache_dir, seed=cfg.seed, real=anatomy, real_share=share)
    synth = synth_sampler(
        maps, source_mm, batch_size=cfg.batch_size - n_real, in_patch=in_patch, out_patch=out_patch, spacing_mm=spacing[0],
        cfg=src.generator, foreground_prob=cfg.foreground_prob, target=cfg.target,
    )
    return mixed_sampler(real, synth)


def validate(model: nnx.Module, cases: Sequence[Case], spec: dict[str, Any]) -> dict[str, float]:
    """DSC per validation case of the full-volume segmentation on the prepared grid: the liver post-processed
    (largest component, holes), lesions thresholded (DSC over all lesions; 1 when both are empty). Tiles are
    blended as inference blends them (the spec's ``blend_sigma_scale``)."""
    post = liver_mask if spec.get("target", "liver") == "liver" else (lambda p: p > 0.5)
    return {c.name: dice(post(foreground(predict_array(model, c.image, **spec_tiling(spec)))), c.label) for c in cases}


def _append(log_path: Path, record: dict[str, Any]) -> None:
    with log_path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after `step` by a run that was killed before checkpointing them."""
    if log_path.is_file():
        keep = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        log_path.write_text("".join(ln + "\n" for ln in keep))


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    cases: tuple[list[Case], list[Case]] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the model of cfg in out_dir; returns {'step', 'best_val_dice', 'out_dir', 'params'}.

    out_dir receives checkpoints/{latest,best} (orbax), best/ (model.json + weights.npz of the best
    validation DSC, loadable with `--model out_dir`; with cfg.ema_decay, of the weights' running average, which is
    what is validated), final/ (the same for the weights at the last step), validated/STEP/ (with cfg.keep_validated, the
same for every validated step), metrics.jsonl and cache/ (prepared phantom
    cases). `cases` overrides the datasets of cfg.data; `stop_after` ends the run after that many
    steps without a final checkpoint (to test resuming after a kill).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = cases if cases is not None else load_cases(cfg, out / "cache")
    key = jax.random.key(cfg.seed)
    latest, best = checkpoint.managers(out)
    model = build_model(cfg.model, rngs=nnx.Rngs(params=jax.random.fold_in(key, 1)))
    in_patch = model.input_shape_for(cfg.patch_out)
    out_patch = model.output_shape(in_patch)
    sampler = make_sampler(cfg, train_cases, in_patch, out_patch, out / "cache")
    if cfg.init_from is not None and latest.latest_step() is None:  # a resumed run restores its own weights
        freeze_batches = (sampler(jax.random.fold_in(jax.random.fold_in(key, 3), i))[0] for i in range(FREEZE_BATCHES))  # read only to freeze norms
        warm_start(model, cfg.model, cfg.init_from, batches=freeze_batches)
    graphdef, params = nnx.split(model)
    adam, plateau = make_optimizers(cfg.learning_rate, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_scale=cfg.plateau_min_scale)
    state = {"params": params, "opt_state": init_opt_state(adam, plateau, params), "meta": np.array([0, 0], np.int64), "best": np.array(-1.0, np.float32)}
    if cfg.ema_decay is not None:
        state["ema"] = params
    log_path = out / "metrics.jsonl"
    restored = checkpoint.restore_latest(latest, state)
    if restored is not None:
        state = restored
        _truncate_log(log_path, int(state["meta"][0]))
    start = int(state["meta"][0])
    batch_sharding, replicated = data_parallel(cfg.batch_size)
    params = jax.device_put(state["params"], replicated)
    opt_state = jax.device_put(state["opt_state"], replicated)
    ema = jax.device_put(state["ema"], replicated) if cfg.ema_decay is not None else None
    n_val, best_dice = int(state["meta"][1]), float(state["best"])
    step_fn = make_train_step(graphdef, cfg.learning_rate, cfg.loss)
    data_key = jax.random.fold_in(key, 2)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    def snapshot(step: int) -> dict[str, Any]:
        snap = {"params": params, "opt_state": opt_state, "meta": np.array([step, n_val], np.int64), "best": np.array(best_dice, np.float32)}
        return snap if ema is None else {**snap, "ema": ema}

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=start, info="")
        for step in range(start, end):
            x, y = sampler(jax.random.fold_in(data_key, step))
            params, opt_state, terms = step_fn(params, opt_state, jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding))
            if ema is not None:
                ema = ema_update(ema, params, cfg.ema_decay)
            done = step + 1
            if done % LOG_EVERY == 0 or done == end:
                rec = {"step": done, **{k: float(v) for k, v in terms.items()}, "lr_scale": float(opt_state.plateau.scale), "time_s": round(time.perf_counter() - t0, 2)}
                _append(log_path, rec)
                bar.update(task, info=f"loss {rec['loss']:.4f}  best val DSC {best_dice:.4f}")
            if done % (cfg.steps_per_epoch * cfg.val_every_epochs) == 0 or done == cfg.steps:
                weights = params if ema is None else ema  # the weights that are validated, scheduled on and kept
                validated = nnx.merge(graphdef, weights)
                scores = validate(validated, val_cases, cfg.model)
                mean = validation_score(scores)
                opt_state = plateau_update(plateau, opt_state, params, mean)
                n_val += 1
                _append(log_path, {"step": done, "val_dice": mean, "val_cases": scores, "lr_scale": float(opt_state.plateau.scale)})
                spec = {**cfg.model, "flip_axes": flip_axes(cfg.augment), "val_dice": round(mean, 4), "step": done}
                if mean > best_dice:
                    best_dice = mean
                    checkpoint.save(best, done, {"params": weights}, metrics={"val_dice": mean})
                    save_model(validated, spec, out / "best")
                if done == cfg.steps:
                    save_model(validated, spec, out / "final")
                if cfg.keep_validated:
                    save_model(validated, spec, out / "validated" / str(done))
                checkpoint.save(latest, done, snapshot(done))
            elif done % cfg.checkpoint_every == 0:
                checkpoint.save(latest, done, snapshot(done))
            bar.update(task, completed=done)
    return {"step": end, "best_val_dice": best_dice, "out_dir": str(out), "params": params}

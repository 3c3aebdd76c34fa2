"""Build models from a JSON spec and save/load their weights (a model folder: model.json + weights.npz).

A model folder holds ``model.json`` (the spec: ``arch``, ``in_features``, ``out_features``,
``features`` and the inference settings such as ``spacing_mm`` and ``tile_out``) and
``weights.npz`` (every ``nnx.Param`` of the model, keyed by its path). Named models ship in
``sirtjax/data/models/<name>/``; nothing is downloaded at run time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from sirtjax.errors import InputError
from sirtjax.models.deepmedic import DeepMedic
from sirtjax.models.freeze_norm import fold_instance_norm, instance_norm_statistics
from sirtjax.models.regseg import RegSegNet
from sirtjax.models.residual_unet import ResidualUNet3D
from sirtjax.models.valid_unet import lesion_unet, thesis_liver_unet
from sirtjax.models.widen import widen_unet_params

ARCHITECTURES = ("thesis_liver_unet", "lesion_unet", "residual_unet3d", "deepmedic", "regseg")
MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


def build_model(spec: dict[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model from a spec dict (arch, in_features, out_features, features[, norm, ...])."""
    arch = spec.get("arch")
    if arch == "regseg":
        return RegSegNet(tuple(int(f) for f in spec["features"]), int(spec.get("cascades", 3)),
                         scale_mm=float(spec.get("scale_mm", 10.0)), rngs=rngs)
    kwargs = {
        "in_features": int(spec.get("in_features", 1)),
        "out_features": int(spec.get("out_features", 1)),
        "features": tuple(int(f) for f in spec["features"]),
    }
    if arch == "thesis_liver_unet":
        return thesis_liver_unet(**kwargs, norm=spec.get("norm"), rngs=rngs)
    if arch == "lesion_unet":
        return lesion_unet(**kwargs, rngs=rngs)
    if arch == "residual_unet3d":
        return ResidualUNet3D(**kwargs, dropout_rate=float(spec.get("dropout_rate", 0.1)), rngs=rngs)
    if arch == "deepmedic":
        return DeepMedic(
            **kwargs, factors=tuple(int(f) for f in spec.get("factors", (5, 15))), context=int(spec.get("context", 30)),
            fusion_features=int(spec.get("fusion_features", 48)), norm=spec.get("norm"), rngs=rngs,
        )
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def param_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every nnx.Param of the model as float32 numpy arrays keyed by 'a/b/c' paths."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {_key(path): np.asarray(var.get_value(), np.float32) for path, var in flat}


def load_param_arrays(model: nnx.Module, arrays: dict[str, np.ndarray], *, source: str = "weights") -> None:
    """Copy arrays keyed like :func:`param_arrays` into the model; shapes and keys must match."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    missing = {_key(p) for p, _ in flat} - set(arrays)
    if missing:
        raise InputError(source, f"weights miss {len(missing)} parameters (e.g. {min(missing)}); wrong architecture?")
    for path, var in flat:
        value = np.asarray(arrays[_key(path)], np.float32)
        if value.shape != var.get_value().shape:
            raise InputError(source, f"parameter {_key(path)} has shape {value.shape}, model expects {var.get_value().shape}")
        var.set_value(jax.device_put(value))  # the state shares the model's variables; no program per shape


def save_model(model: nnx.Module, spec: dict[str, Any], folder: str | Path) -> Path:
    """Write model.json (the spec) and weights.npz (the parameters) into folder; returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "weights.tmp.npz"
    np.savez_compressed(tmp, **param_arrays(model))
    tmp.replace(folder / "weights.npz")
    (folder / "model.json.tmp").write_text(json.dumps(spec, indent=2) + "\n")
    (folder / "model.json.tmp").replace(folder / "model.json")
    return folder


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """The model folder for a shipped name (e.g. 'liver') or a path to a folder/training run."""
    path = Path(name_or_path)
    for cand in (path, path / "best", MODELS_DIR / str(name_or_path)):
        if (cand / "model.json").is_file() and (cand / "weights.npz").is_file():
            return cand
    shipped = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "model.json").is_file()) if MODELS_DIR.is_dir() else []
    raise InputError(name_or_path, f"no model.json + weights.npz here; shipped models: {', '.join(shipped) or 'none'}")


def _read_weights(name_or_path: str | Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(path, arrays) of the weights.npz of a shipped model name or model folder."""
    path = resolve_model_dir(name_or_path) / "weights.npz"
    with np.load(path) as data:
        return path, dict(data)


def load_weights(model: nnx.Module, name_or_path: str | Path) -> None:
    """Copy the weights.npz of a shipped model name or model folder into `model` (same architecture)."""
    path, arrays = _read_weights(name_or_path)
    load_param_arrays(model, arrays, source=str(path))


def warm_start(model: nnx.Module, spec: dict[str, Any], name_or_path: str | Path, *, batches: Iterable[jax.Array] = ()) -> None:
    """Copy a trained model's weights into `model` (built from `spec`); a narrower thesis liver U-Net is widened, and
    an instance-normalised model's norms are frozen for a `spec` without norms.

    Widening (:mod:`sirtjax.models.widen`) keeps the trained model's function, so a wider network
    warm-starts from a shipped one instead of from scratch. Freezing (:mod:`sirtjax.models.freeze_norm`)
    averages the norms' statistics over the tiles of `batches` (training input batches), read only then.
    """
    old_spec = read_spec(name_or_path)
    same_features = [int(f) for f in old_spec.get("features", ())] == [int(f) for f in spec["features"]]
    if old_spec.get("arch") == spec.get("arch") and old_spec.get("norm") != spec.get("norm"):
        folder = resolve_model_dir(name_or_path)
        if not (old_spec.get("norm") == "instance" and spec.get("norm") is None):
            raise InputError(folder, f"norm {old_spec.get('norm')!r} cannot become {spec.get('norm')!r}; only instance norms can be frozen (to none)")
        if not same_features:
            raise InputError(folder, f"features {old_spec.get('features')} differ from {spec['features']}; norms are frozen at the same "
                                     "features (train that first, then widen its best/ folder)")
        old_model, _ = load_model(folder)
        try:
            statistics = instance_norm_statistics(old_model, batches)
        except ValueError as exc:
            raise InputError(folder, f"cannot freeze its norms: {exc}") from None
        load_param_arrays(model, fold_instance_norm(param_arrays(old_model), statistics), source=str(folder))
        return
    if same_features:
        load_weights(model, name_or_path)
        return
    path, old = _read_weights(name_or_path)
    if not old_spec.get("arch") == spec.get("arch") == "thesis_liver_unet":
        raise InputError(path, f"features {old_spec.get('features')} differ from {spec['features']}; only a thesis_liver_unet can be widened")
    try:
        wide = widen_unet_params(old, param_arrays(model), old_spec["features"], spec["features"])
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    load_param_arrays(model, wide, source=str(path))


def read_spec(name_or_path: str | Path) -> dict[str, Any]:
    """The model.json spec of a shipped model name or a model folder, without its weights."""
    folder = resolve_model_dir(name_or_path)
    try:
        spec = json.loads((folder / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(folder / "model.json", f"cannot read the model spec: {exc}") from None
    if not isinstance(spec, dict):
        raise InputError(folder / "model.json", "a model spec must be a JSON object")
    return spec


def load_model(name_or_path: str | Path) -> tuple[nnx.Module, dict[str, Any]]:
    """Load (model, spec) from a shipped model name or a model folder (see module docstring)."""
    folder = resolve_model_dir(name_or_path)
    spec = read_spec(folder)
    try:
        # shapes only: a random initialisation would compile one program per kernel shape (about 40 s for the
        # liver U-Net on a 2-core CPU) for values that the weights replace
        model = nnx.eval_shape(lambda: build_model(spec, rngs=nnx.Rngs(params=0)))
        load_weights(model, folder)
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(folder, f"cannot load model: {exc}") from exc
    unset = [_key(p) for p, v in nnx.to_flat_state(nnx.state(model)) if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if unset:
        raise InputError(folder, f"cannot load model: {len(unset)} variables are not in its weights (e.g. {unset[0]})")
    return model, spec


def spec_problem(spec: dict[str, Any], target: str, modality: str, *, registration: bool = False) -> str | None:
    """Why a model spec cannot segment `target` ('liver' | 'lesions') on a `modality` ('ct' | 'mr') image, or None.

    A spec without ``target`` is a liver model; one without ``modalities`` takes any. ``registration``: the
    registration-segmentation network (arch ``regseg``, which needs a reference image) is wanted, not a U-Net.
    """
    if (spec.get("arch") == "regseg") != registration:
        return ("is not a registration-segmentation network" if registration else
                "is a registration-segmentation network: use --reference and --reference-mask (segment) or --regseg-model (plan)")
    has = spec.get("target", "liver")
    if has != target:
        return f"segments {has}, not {target}"
    if modality.lower() not in spec.get("modalities", (modality.lower(),)):
        return f"was trained for {spec.get('modalities')}, not {modality.lower()}"
    for key in ("ct_noise_index_hu", "mr_noise_index"):
        if key in spec and len(set(spec.get("spacing_mm", (3.0,) * 3))) != 1:
            return f"declares {key} on an anisotropic grid {spec['spacing_mm']} mm: noise matching needs an isotropic one"
    shifts = spec.get("tile_shifts_vox", [0])
    if not isinstance(shifts, list) or 0 not in shifts or not all(isinstance(s, int) and s >= 0 for s in shifts):
        return f"declares tile_shifts_vox {shifts!r}: it must list voxel counts >= 0, 0 among them"
    return None

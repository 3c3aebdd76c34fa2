"""Training configuration: a JSON file (configs/segmentation/*.json) parsed into a frozen dataclass.

Keys (defaults in parentheses): ``model`` (the model spec saved with the weights: arch, features,
in_features, out_features, spacing_mm (x, y, z), tile_out (x, y, z), modalities); ``data``
(``{"kind": "phantom", "train_seeds", "val_seeds", "images": {name: modality}, "val_images", "image_weights": {name: sampling weight},
"lesion_min_cnr": training labels only for lesions the rendering shows (0, all; see `sirtjax.segmentation.visibility`),
"noisy_ct": {"images": {name: "ct"}, "ct_noise_hu": [low, high], "weight"}: the training and validation studies rendered again
with noisier CT and noise-matched to the model spec's ``ct_noise_index_hu``, see `sirtjax.train.data.noisy_ct_cases`,
"variants": [{"tag", "phantom_options", "images": {name: modality}, "weight"}]: the training and validation studies
rendered again with those phantom options (a liver size, a body), their cases named with the tag}`` or
``{"kind": "msd", "root", "modality", "label_values", "val_cases"}``); ``patch_out`` (z, y, x)
output patch; ``batch_size`` (2); ``steps`` (total); ``steps_per_epoch`` (100);
``val_every_epochs`` (1); ``checkpoint_every`` (steps, 50); ``learning_rate`` (1e-3);
``plateau`` (factor 0.2, patience 2 validations, min_scale 1e-3); ``loss`` (dice);
``foreground_prob`` (0.5); ``augment`` (see AugmentConfig); ``synth`` (none: domain-randomised
images, ``{"seeds", "variants": [phantom options, cycled over the seeds], "n_real": realistic
renderings per batch, "generator": SynthConfig fields, its "lesions" LesionConfig fields, "anatomy": {"manifest",
"maps": label map names, "share"}: real anatomy (`sirtjax.train.anatomy`) for that share of the synthetic patches}``, see
`sirtjax.train.synth`); ``data.real_val`` (none: ``{"manifest", "scans": [names]}``, real scans validated beside the
phantom's; the validation score is then the mean of the two groups' means); ``seed`` (0); ``init_from`` (none: a
shipped model name or a model/run folder, relative to the config file, whose weights start a new run
instead of random ones -- fine-tuning; a thesis liver U-Net of narrower widths is widened so that it computes the
same function, `sirtjax.models.widen`, and an instance-normalised one's norms are frozen for a model without norms,
`sirtjax.models.freeze_norm`; ignored when the run resumes from its own checkpoint); ``ema_decay`` (none: a running
average of the weights, ema <- decay * ema + (1 - decay) * weights after every step, starting from the first weights;
validation, the learning-rate schedule and best/ then use the average, `sirtjax.train.step.ema_update`); ``keep_validated``
(false: also keep every validated step's weights in validated/STEP/, to average a run's steps with
scripts/average_models.py); ``extends`` (a config file beside
this one whose keys this one's override, objects merged key by key; relative paths are read beside this one).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sirtjax.errors import InputError
from sirtjax.train.augment import AugmentConfig
from sirtjax.train.losses import LOSSES
from sirtjax.train.synth import SynthConfig
from sirtjax.train.synth_lesions import LesionConfig

TARGETS = ("liver", "lesions")  # model.target: what the labels are (default liver)


@dataclasses.dataclass(frozen=True)
class RealAnatomy:
    """Label maps of real scans for the generator (`sirtjax.train.anatomy`): the manifest, which of its label maps,
    and the share of synthetic patches drawn from them."""

    manifest: str
    maps: tuple[str, ...]
    share: float = 0.5


@dataclasses.dataclass(frozen=True)
class SynthSource:
    """Where synthetic images come from: phantom seeds, their anatomy variants, real label maps, the generator."""

    seeds: tuple[int, ...]
    variants: tuple[dict[str, Any], ...] = ({},)  # PhantomConfig options, seed i gets variant i % len
    n_real: int = 1  # realistic renderings (data) per batch; the rest of the batch is synthetic
    generator: SynthConfig = SynthConfig()
    anatomy: RealAnatomy | None = None


def _tuples(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON lists as tuples (the frozen config dataclasses hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _synth_source(raw: dict[str, Any] | None) -> SynthSource | None:
    if raw is None:
        return None
    variants = tuple(_tuples(var) for var in raw.get("variants", [{}]))
    generator = dict(raw.get("generator", {}))
    lesions = generator.pop("lesions", None)
    generator = SynthConfig(**_tuples(generator), lesions=None if lesions is None else LesionConfig(**_tuples(lesions)))
    anatomy = raw.get("anatomy")
    anatomy = None if anatomy is None else RealAnatomy(str(anatomy["manifest"]), tuple(str(m) for m in anatomy["maps"]), float(anatomy.get("share", 0.5)))
    return SynthSource(tuple(int(s) for s in raw["seeds"]), variants or ({},), int(raw.get("n_real", 1)), generator, anatomy)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All settings of one training run (see the module docstring for the JSON keys)."""

    model: dict[str, Any]
    data: dict[str, Any]
    patch_out: tuple[int, int, int]
    steps: int
    batch_size: int = 2
    steps_per_epoch: int = 100
    val_every_epochs: int = 1
    checkpoint_every: int = 50
    learning_rate: float = 1e-3
    plateau_factor: float = 0.2
    plateau_patience: int = 2
    plateau_min_scale: float = 1e-3
    loss: str = "dice"
    foreground_prob: float = 0.5
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    init_from: str | None = None
    synth: SynthSource | None = None
    ema_decay: float | None = None
    keep_validated: bool = False

    @property
    def target(self) -> str:
        """'liver' or 'lesions': the model spec's target (default liver)."""
        return str(self.model.get("target", "liver"))


NOISY_CT_IMAGES = ("maa_ct", "y90_ct")  # the phantom CTs that PhantomConfig.ct_noise_hu renders (diag_ct has its own noise)


def _noisy_ct_ok(n: Any) -> bool:
    """Whether data.noisy_ct is well formed (see the module docstring)."""
    try:
        low, high = (float(v) for v in n["ct_noise_hu"])
        images = dict(n["images"])
        return bool(images) and all(k in NOISY_CT_IMAGES and v == "ct" for k, v in images.items()) and 0 <= low <= high and float(n.get("weight", 1.0)) >= 0
    except (TypeError, KeyError, ValueError):
        return False


def _variants_ok(variants: Any) -> bool:
    """Whether data.variants is well formed (see the module docstring); the phantom options themselves are checked when the studies are made."""
    try:
        return all(isinstance(v["tag"], str) and v["tag"].isidentifier() and isinstance(v["phantom_options"], dict)
                   and bool(dict(v["images"])) and float(v.get("weight", 1.0)) >= 0 for v in variants)
    except (TypeError, KeyError, ValueError):
        return False


def _real_val_ok(r: Any) -> bool:
    """Whether data.real_val is well formed: {"manifest": path, "scans": [names]}."""
    return isinstance(r, dict) and isinstance(r.get("manifest"), str) and bool(r.get("scans")) and all(isinstance(n, str) for n in r["scans"])


def parse_config(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a config dict and build a TrainConfig; bad values raise InputError(source, ...)."""
    raw = dict(raw)
    try:
        plateau = raw.pop("plateau", {})
        aug = raw.pop("augment", {})
        synth = _synth_source(raw.pop("synth", None))
        cfg = TrainConfig(
            **{k: v for k, v in raw.items() if not k.startswith("_")},
            plateau_factor=float(plateau.get("factor", 0.2)),
            plateau_patience=int(plateau.get("patience", 2)),
            plateau_min_scale=float(plateau.get("min_scale", 1e-3)),
            augment=AugmentConfig(**_tuples(aug)),
            synth=synth,
        )
    except (TypeError, KeyError) as exc:
        raise InputError(source, f"bad config key: {exc}") from exc
    cfg = dataclasses.replace(cfg, patch_out=tuple(int(n) for n in cfg.patch_out))
    checks = [
        (cfg.steps > 0, "steps must be positive"),
        (cfg.batch_size > 0, "batch_size must be positive"),
        (cfg.steps_per_epoch > 0 and cfg.checkpoint_every > 0 and cfg.val_every_epochs > 0, "epoch/checkpoint/validation intervals must be positive"),
        (cfg.learning_rate > 0, "learning_rate must be positive"),
        (cfg.ema_decay is None or 0 < cfg.ema_decay < 1, "ema_decay must be in (0, 1)"),
        (0 < cfg.plateau_factor < 1, "plateau factor must be in (0, 1)"),
        (cfg.loss in LOSSES, f"loss must be one of {LOSSES}"),
        (len(cfg.patch_out) == 3 and min(cfg.patch_out) > 0, "patch_out needs 3 positive sizes (z, y, x)"),
        (cfg.data.get("kind") in ("phantom", "msd"), "data.kind must be 'phantom' or 'msd'"),
        ("arch" in cfg.model and "features" in cfg.model, "model needs 'arch' and 'features'"),
        (cfg.target in TARGETS, f"model.target must be one of {TARGETS}"),
        (cfg.target == "liver" or cfg.data.get("kind") == "phantom", "a lesion model trains on phantom data"),
        (cfg.synth is None or 0 <= cfg.synth.n_real < cfg.batch_size, "synth.n_real must be in [0, batch_size)"),
        (cfg.synth is None or cfg.synth.anatomy is None or (cfg.synth.anatomy.maps and 0 < cfg.synth.anatomy.share < 1),
         "synth.anatomy needs label map names and a share in (0, 1)"),
        ("variants" not in cfg.data or (cfg.data.get("kind") == "phantom" and _variants_ok(cfg.data["variants"])),
         "data.variants needs phantom data and, for each, a tag (a name), phantom_options, images and a weight >= 0"),
        ("real_val" not in cfg.data or (cfg.target == "liver" and _real_val_ok(cfg.data["real_val"])),
         "data.real_val needs a liver model, a manifest and the names of its scans"),
        ("noisy_ct" not in cfg.data or (cfg.target == "liver" and cfg.data.get("kind") == "phantom" and "ct_noise_index_hu" in cfg.model),
         "data.noisy_ct needs a liver model on phantom data whose spec declares ct_noise_index_hu"),
        ("noisy_ct" not in cfg.data or _noisy_ct_ok(cfg.data["noisy_ct"]),
         f"data.noisy_ct needs images among {NOISY_CT_IMAGES} as 'ct', ct_noise_hu [low, high] with 0 <= low <= high, and a weight >= 0"),
        (cfg.synth is None or len(set(cfg.model.get("spacing_mm", (3.0,) * 3))) == 1, "synthetic training needs an isotropic model spacing"),
        ("ct_noise_index_hu" not in cfg.model or len(set(cfg.model.get("spacing_mm", (3.0,) * 3))) == 1,
         "ct_noise_index_hu needs an isotropic model spacing (noise matching's total variation)"),
    ]
    for ok, problem in checks:
        if not ok:
            raise InputError(source, problem)
    return cfg


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys: objects merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for k, v in override.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_json_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The JSON object of a config file, its ``extends`` (a config file beside it) merged under it (:func:`_merged`);
    InputError naming the file when it is missing, not JSON, or extends itself."""
    path = Path(path)
    seen = (*_seen, path.resolve())
    raw = _read_json_object(path)
    if "extends" not in raw:
        return raw
    base = path.parent / str(raw.pop("extends"))
    if base.resolve() in seen:
        raise InputError(path, f"extends {base.name}, which extends it again")
    return _merged(read_json_config(base, seen), raw)


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in one file; InputError naming it when it is missing, not JSON or not an object."""
    if not path.is_file():
        raise InputError(path, "no such config file" if not path.exists() else "is a folder, not a JSON config file")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read JSON config: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "a config must be a JSON object")
    return raw


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a JSON training config."""
    path = Path(path)
    raw = read_json_config(path)
    for section, key in (("data", "root"), ("data", "real_val"), ("synth", "anatomy")):  # relative paths are relative to the config
        entry = raw.get(section, {}).get(key)
        if key == "root" and isinstance(entry, str):
            raw[section][key] = str((path.parent / entry).resolve())
        elif isinstance(entry, dict) and isinstance(entry.get("manifest"), str):
            raw[section][key] = {**entry, "manifest": str((path.parent / entry["manifest"]).resolve())}
    return parse_config(resolve_init_from(raw, path), str(path))


def is_regseg_config(raw: dict[str, Any]) -> bool:
    """Whether a raw training config trains the registration-segmentation network (model arch "regseg")."""
    return isinstance(raw.get("model"), dict) and raw["model"].get("arch") == "regseg"


def resolve_init_from(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The config with a relative ``init_from`` folder resolved against the config's folder (else a shipped name)."""
    init = raw.get("init_from")
    if isinstance(init, str) and (path.parent / init).is_dir():
        return {**raw, "init_from": str((path.parent / init).resolve())}
    return raw

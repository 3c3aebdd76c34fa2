"""Phantom SIRT studies: generate, write and read a study folder.

A study is one synthetic patient seen in three sessions (MAA SPECT/CT, diagnostic CT and MR,
90Y PET/CT), with label maps per anatomical image, ``truth.json`` (every generating parameter and
the ground truth) and ``study.json`` (the manifest the workflows read). The same seed and config
give the same bytes on disk.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np

from sirtjax.errors import InputError
from sirtjax.io import read_volume, write_volume
from sirtjax.outputs import output_dir, write_json
from sirtjax.phantom import modalities, sessions
from sirtjax.phantom.anatomy import sample_anatomy
from sirtjax.phantom.config import ANATOMICAL_IMAGES, IMAGE_SESSION, LABEL_KINDS, SESSIONS, PhantomConfig
from sirtjax.phantom.deform import sample_posture, to_world
from sirtjax.phantom.raster import Canonical, Tissue, rasterize
from sirtjax.volume import Volume

SCHEMA_VERSION = 1
TEXTURE_FRACTION = MappingProxyType({"nc_ct": 0.06, "ce_ct": 0.05, "art_ct": 0.05, "del_ct": 0.05, "mr_t1": 0.04, "mr_t2": 0.04, "mr_opp": 0.04})
"""Standard deviation of the liver parenchyma texture, as a fraction of the liver intensity."""
STREAMS = ("anatomy", "texture", "postures", "grids", "intensities", "uptake", "noise")
IMAGE_FILES = tuple(IMAGE_SESSION) + tuple(f"{x}_{k}" for x in ANATOMICAL_IMAGES for k in LABEL_KINDS)
"""Stems of the image files of a study folder (each written as STEM.nii.gz)."""


@dataclasses.dataclass(frozen=True)
class Study:
    """A phantom study: images keyed by file stem, ground truth and manifest (JSON dicts)."""

    images: dict[str, Volume]
    truth: dict
    manifest: dict


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children)}


def _pv_volume_ml(sdf: np.ndarray, spacing_mm: float, where: np.ndarray | None = None) -> float:
    """Volume (ml) inside a signed distance map, with linear partial-volume at the surface."""
    frac = np.clip(0.5 - sdf / np.float32(spacing_mm), 0.0, 1.0)
    if where is not None:
        frac = frac * where
    return float(frac.sum(dtype=np.float64) * spacing_mm**3 / 1000.0)


def _liver_z_range(can: Canonical) -> tuple[float, float]:
    zs = np.flatnonzero((can.liver_sdf.array < 0).any(axis=(1, 2))) + can.liver_sdf.start[0]
    return float(can.origin_mm[2] + zs[0] * can.spacing_mm), float(can.origin_mm[2] + zs[-1] * can.spacing_mm)


def generate_study(seed: int, config: PhantomConfig = PhantomConfig(), *, progress: Callable[[str], None] | None = None) -> Study:
    """Generate the phantom study of a seed (a non-negative int); deterministic per (seed, config).

    progress, when given, is called with a short description of each stage (for progress bars).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    say = progress or (lambda stage: None)
    rng = _rngs(int(seed))
    say("drawing the anatomy")
    anat = sample_anatomy(rng["anatomy"], config)
    say("rasterising the canonical patient")
    can = _rasterize(anat, config, rng)
    postures = {s: sample_posture(rng["postures"], config, anat) for s in SESSIONS}
    landmarks = _landmarks(anat, postures)
    truth = _truth_core(seed, config, anat, can, postures, landmarks, rng["uptake"])
    truth["intensities"] = modalities.sample_intensities(rng["intensities"], anat)
    images: dict[str, Volume] = {}
    truth["images"] = {}
    offsets = {s: rng["grids"].uniform(-1, 1, 3) for s in SESSIONS}
    liver_z = _liver_z_range(can)
    for name, session in IMAGE_SESSION.items():
        say(f"imaging {name}")
        spec = config.grid(name)
        center_z, crop = sessions.crop_center_z(spec, config.spacing_scale, liver_z, rng["grids"])
        center = to_world(postures[session], np.array([[0.0, anat["body"]["center_xy"][1], center_z]]))[0]
        geom = sessions.place_grid(spec, config.spacing_scale, center, offsets[session], rng["grids"])
        sampler = sessions.CanonicalSampler(can, postures[session], geom)
        arrays = _image_arrays(name, config, can, sampler, geom, truth, landmarks, rng["noise"])
        for stem, array in arrays.items():
            images[stem] = sessions.grid_volume(geom, array)
        truth["images"][name] = {"session": session, **geom, "crop": crop}
        if name in ANATOMICAL_IMAGES:
            truth["images"][name]["landmark_ids"] = sorted(int(v) for v in np.unique(arrays[f"{name}_labels"]) if v >= 2)
    manifest = make_manifest(truth)
    return Study(images={k: images[k] for k in IMAGE_FILES}, truth=truth, manifest=manifest)


def _rasterize(anat: dict, config: PhantomConfig, rng: dict[str, np.random.Generator]) -> Canonical:
    return rasterize(anat, config.canonical_spacing_mm * config.spacing_scale, config.clip_label_radius_mm, rng["texture"])


def canonical_patient(seed: int, config: PhantomConfig = PhantomConfig()) -> Canonical:
    """The rasterised canonical patient of a seed (tissue codes and label fields), without imaging.

    The same anatomy as :func:`generate_study` draws for (seed, config); the synthetic training
    generator (`sirtjax.train.synth`) renders its images from these tissue maps.
    """
    rng = _rngs(int(seed))
    return _rasterize(sample_anatomy(rng["anatomy"], config), config, rng)


def _landmarks(anat: dict, postures: dict) -> list[dict]:
    out = []
    for kind, items in (("lesion", anat["lesions"]), ("clip", anat["clips"])):
        for item in items:
            c = np.asarray([item["center"]], np.float64)
            out.append({
                "id": item["id"],
                "kind": kind,
                "canonical_mm": item["center"],
                "world_mm": {s: to_world(p, c)[0].astype(np.float64).round(4).tolist() for s, p in postures.items()},
            })
    return out


def _truth_core(seed, config, anat, can, postures, landmarks, rng) -> dict:
    h = can.spacing_mm
    liver_ml = _pv_volume_ml(can.liver_sdf.array, h)
    lo, hi = np.log(config.tumour_to_normal[0]), np.log(config.tumour_to_normal[1])
    lesions = []
    for les in anat["lesions"]:
        tn = float(np.exp(rng.uniform(lo, hi)))
        lesions.append({
            "id": les["id"],
            "instance": les["id"] - 1,
            "volume_ml": _pv_volume_ml(can.landmark_sdf.array, h, can.landmark_id.array == les["id"]),
            "diameter_mm": 2 * float(np.mean(les["radii"])),
            "necrotic": les["necrotic_fraction"] > 0,
            "enhancement": les["enhancement"],
            "tn_ratio_maa": tn,
            "tn_ratio_y90": tn * float(np.exp(rng.normal(0, config.y90_variation))),
        })
    lsf = float(rng.uniform(*config.lung_shunt_fraction))
    maa_mbq = float(rng.uniform(*config.maa_activity_mbq))
    tumour_ml = sum(les["volume_ml"] for les in lesions)
    p = anat["patient"]
    bsa = 0.20247 * (p["height_cm"] / 100) ** 0.725 * p["weight_kg"] ** 0.425
    y90_gbq = float(np.clip(bsa - 0.2 + tumour_ml / liver_ml, 0.5, 3.0))
    return {
        "schema_version": SCHEMA_VERSION,
        "seed": int(seed),
        "config": config.to_json(),
        "patient": {"height_cm": p["height_cm"], "weight_kg": p["weight_kg"], "bsa_m2": bsa},
        "anatomy": anat,
        "canonical_spacing_mm": h,
        "liver_volume_ml": liver_ml,
        "tumour_volume_ml": tumour_ml,
        "lesions": lesions,
        "landmarks": landmarks,
        "lung_shunt_fraction": {"maa": lsf, "y90": float(np.clip(lsf * np.exp(rng.normal(0, config.y90_variation)), 0.0, 0.5))},
        "activities": {"maa_mbq": maa_mbq, "y90_gbq": y90_gbq, "y90_method": "BSA: BSA - 0.2 + V_tumour / V_liver (GBq)"},
        "postures": postures,
    }


def _image_arrays(name, config, can, sampler, geom, truth, landmarks, rng) -> dict[str, np.ndarray]:
    session = IMAGE_SESSION[name]
    if name in ("maa_spect", "y90_pet"):
        return {name: _emission(name, config, can, sampler, geom, truth, rng)}
    modality = _modality(name, config)
    clean = _clean_signal(modality, truth["intensities"], can, sampler)
    texture = sampler.field_linear(can.liver_texture)
    liver_value = truth["intensities"]["mr_t1" if modality == "mr_opp" else modality]["LIVER"]
    clean += texture * np.float32(TEXTURE_FRACTION[modality] * abs(liver_value))
    if modality.startswith("mr"):
        clean = clean * _clip_voids(sampler.points_mm, truth)
        image = modalities.mr_image(rng, clean, config.mr_bias_amplitude, config.mr_noise_fraction, truth["intensities"]["mr_t1"]["LIVER"])
    else:
        noise = config.contrast_ct_noise_hu if name == "diag_ct" else config.ct_noise_hu
        image = modalities.ct_image(rng, clean, noise)
    lesion_ids = {les["id"] for les in truth["lesions"]}
    here = [{"id": lm["id"], "world_mm": lm["world_mm"][session]} for lm in landmarks]
    labels = sessions.anatomical_labels(can, sampler, geom, here, lesion_ids)
    return {name: image, **{f"{name}_{k}": v for k, v in labels.items()}}


def _modality(name: str, config: PhantomConfig) -> str:
    """The intensity table an anatomical image is rendered with (phase and sequence from config)."""
    if name == "diag_ct":
        return {"portal": "ce_ct", "arterial": "art_ct", "delayed": "del_ct"}[config.diag_ct_phase]
    if name == "diag_mr":
        return {"t1": "mr_t1", "t2": "mr_t2", "opposed": "mr_opp"}[config.diag_mr_sequence]
    return "nc_ct"


def _clean_signal(modality: str, intensities: dict, can: Canonical, sampler: sessions.CanonicalSampler) -> np.ndarray:
    """Noise-free image on the session grid; opposed-phase MR is |water - fat| after partial voluming,
    so voxels that mix fat and water cancel (the dark fat-water boundaries of opposed-phase images)."""
    if modality != "mr_opp":
        return sampler.linear(modalities.intensity_lut(intensities, modality)[can.tissue])
    t1 = sampler.linear(modalities.intensity_lut(intensities, "mr_t1")[can.tissue])
    fat = sampler.linear(modalities.intensity_lut(intensities, "mr_t1_fat")[can.tissue])
    return np.abs(t1 - 2 * fat)


def _clip_voids(q: np.ndarray, truth: dict) -> np.ndarray:
    """MR susceptibility voids at canonical points q (..., 3): 1 - a 4 mm Gaussian hole per clip."""
    factor = np.ones(q.shape[:-1], np.float32)
    for clip in truth["anatomy"]["clips"]:
        d2 = np.sum((q - np.asarray(clip["center"], np.float32)) ** 2, axis=-1)
        factor *= 1.0 - np.exp(-d2 / np.float32(2 * 4.0**2))
    return factor


def _emission(name, config, can, sampler, geom, truth, rng) -> np.ndarray:
    tracer = "maa" if name == "maa_spect" else "y90"
    tissue = sampler.nearest(can.tissue)
    liver = sampler.field_linear(can.liver_sdf) < 0
    lungs = (sampler.field_linear(can.lungs_sdf) < 0) & ~liver
    body = (tissue != Tissue.AIR) & (tissue != Tissue.GAS) & ~liver & ~lungs
    ratios = [les[f"tn_ratio_{tracer}"] for les in truth["lesions"]]
    weight = modalities.uptake_lut(ratios, config.necrotic_uptake)[tissue] * liver
    lsf = truth["lung_shunt_fraction"][tracer]
    fractions = modalities.activity_fractions(weight, lungs, body, lsf, config.body_background_fraction)
    spacing = geom["spacing_mm"]
    if tracer == "maa":
        total = truth["activities"]["maa_mbq"] * config.spect_counts_per_mbq
        image, expected = modalities.spect_counts(rng, fractions, total, config.spect_fwhm_mm, spacing)
        truth["emission_maa"] = {"total_counts": total, "expected_counts_in_image": expected}
    else:
        gbq = truth["activities"]["y90_gbq"]
        image, expected = modalities.pet_bq_per_ml(rng, fractions, gbq, config.pet_counts_per_gbq, config.pet_fwhm_mm, spacing)
        truth["emission_y90"] = {"activity_bq": gbq * 1e9, "expected_bq_in_image": expected, "decay_corrected_to": "injection"}
    return image


def make_manifest(truth: dict) -> dict:
    """The study.json manifest: series, masks, patient, activities and targets (file names relative)."""
    cfg = truth["config"]
    series = {
        "maa_ct": {"modality": "CT", "units": "HU", "contrast": False},
        "maa_spect": {"modality": "SPECT", "units": "counts", "tracer": "99mTc-MAA", "ct": "maa_ct"},
        "diag_ct": {"modality": "CT", "units": "HU", "contrast": True, "phase": "portal venous"},
        "diag_mr": {"modality": "MR", "units": "a.u.", "sequence": "T1"},
        "y90_ct": {"modality": "CT", "units": "HU", "contrast": False},
        "y90_pet": {"modality": "PET", "units": "Bq/ml", "tracer": "90Y", "ct": "y90_ct", "decay_corrected_to": "injection"},
    }
    for name, entry in series.items():
        entry["file"] = f"{name}.nii.gz"
        entry["session"] = {"maa": "maa", "diag_ct": "diagnostic", "diag_mr": "diagnostic", "y90": "y90"}[IMAGE_SESSION[name]]
    return {
        "schema": "sirtjax.study",
        "schema_version": SCHEMA_VERSION,
        "name": f"phantom-seed-{truth['seed']}",
        "patient": {"height_cm": round(truth["patient"]["height_cm"], 1), "weight_kg": round(truth["patient"]["weight_kg"], 1)},
        "sessions": {
            "maa": {"ct": "maa_ct", "spect": "maa_spect"},
            "diagnostic": {"ct": "diag_ct", "mr": "diag_mr"},
            "y90": {"ct": "y90_ct", "pet": "y90_pet"},
        },
        "series": series,
        "masks": {x: {k: f"{x}_{k}.nii.gz" for k in LABEL_KINDS} for x in ANATOMICAL_IMAGES},
        "activities": {
            "maa_injected_mbq": round(truth["activities"]["maa_mbq"], 2),
            "y90_injected_gbq": round(truth["activities"]["y90_gbq"], 3),
        },
        "target_doses_gy": dict(cfg["target_doses_gy"]),
        "truth": "truth.json",
    }


def write_study(study: Study, folder: str | Path) -> Path:
    """Write every image (NIfTI), truth.json and study.json into folder, atomically; returns folder."""
    folder = Path(folder)
    with output_dir(folder) as tmp:
        for stem, vol in study.images.items():
            write_volume(vol, tmp / f"{stem}.nii.gz")
        for fname, data in (("truth.json", study.truth), ("study.json", study.manifest)):
            write_json(data, tmp / fname, sort_keys=True)
    return folder


def read_study(folder: str | Path) -> Study:
    """Read a study folder written by write_study (images as Volumes, JSON as dicts)."""
    folder = Path(folder)
    data = {}
    for fname in ("truth.json", "study.json"):
        path = folder / fname
        if not path.is_file():
            raise InputError(path, "missing: not a phantom study folder")
        try:
            data[fname] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    images = {stem: read_volume(folder / f"{stem}.nii.gz") for stem in IMAGE_FILES}
    return Study(images=images, truth=data["truth.json"], manifest=data["study.json"])

"""Image formation: tissue intensities per modality, CT and MR noise, SPECT and PET emission.

CT values are Hounsfield units (non-contrast: MAA and 90Y CT; portal-venous contrast: diagnostic
CT); MR is a T1-weighted signal in arbitrary units (fat bright, liver brighter than spleen and
muscle, vessels dark as flow voids, metal clips a susceptibility void). Emission images are
computed on their own grid from hard compartments (liver with per-lesion uptake, lungs, rest of
the body) so that the compartment totals are exact before blurring and noise:

- SPECT: expected counts = total counts x activity fraction, blurred by a Gaussian PSF, Poisson.
- PET: activity concentration in Bq/ml (decay-corrected to the injection time), blurred, with
  Poisson noise on ``counts_per_gbq`` detected counts per GBq, scaled back to Bq/ml.

Approximations: no attenuation, scatter or collimator depth dependence (the PSF is a stationary
Gaussian), no activity outside the emission field of view, no CT streaks around metal.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from scipy import ndimage

from sirtjax.phantom.raster import Tissue

CT_RANGE_HU = (-1024, 3071)

# (non-contrast CT HU, contrast CT HU, T1 MR a.u.) per tissue; the seed perturbs them slightly
_BASE = MappingProxyType({
    Tissue.AIR: (-1000, -1000, 0),
    Tissue.FAT: (-100, -100, 900),
    Tissue.MUSCLE: (45, 60, 380),
    Tissue.CORTEX: (900, 900, 40),
    Tissue.MARROW: (230, 240, 620),
    Tissue.DISC: (85, 90, 300),
    Tissue.CSF: (8, 8, 150),
    Tissue.LUNG: (-860, -850, 25),
    Tissue.LUNG_VESSEL: (35, 150, 60),
    Tissue.HEART: (42, 170, 80),
    Tissue.AORTA: (42, 165, 60),
    Tissue.IVC: (40, 145, 70),
    Tissue.LIVER: (58, 115, 560),
    Tissue.PORTAL: (42, 180, 70),
    Tissue.HEPATIC: (40, 165, 70),
    Tissue.SPLEEN: (47, 125, 420),
    Tissue.KIDNEY_CORTEX: (33, 190, 480),
    Tissue.KIDNEY_MEDULLA: (30, 120, 340),
    Tissue.STOMACH_WALL: (40, 95, 380),
    Tissue.STOMACH_CONTENT: (12, 12, 180),
    Tissue.GAS: (-950, -950, 0),
    Tissue.BOWEL: (30, 80, 330),
    Tissue.GALLBLADDER: (8, 10, 160),
    Tissue.CLIP: (3000, 3000, 0),
})
MODALITIES = ("nc_ct", "ce_ct", "mr_t1")
DERIVED = ("art_ct", "del_ct", "mr_t2", "mr_t1_fat")
"""Contrasts derived from the drawn ones without further random draws (so every seed keeps its
patient): arterial and delayed CT phases, a T2-weighted MR and the fat part of the T1 signal (for
in/opposed-phase imaging). Their values are textbook-typical, not measured."""

# T2-weighted signal (a.u.): fluid bright, liver darker than spleen, flowing blood dark
_T2 = MappingProxyType({
    Tissue.AIR: 0, Tissue.FAT: 650, Tissue.MUSCLE: 220, Tissue.CORTEX: 30, Tissue.MARROW: 450, Tissue.DISC: 700,
    Tissue.CSF: 1500, Tissue.LUNG: 20, Tissue.LUNG_VESSEL: 60, Tissue.HEART: 150, Tissue.AORTA: 60, Tissue.IVC: 80,
    Tissue.LIVER: 300, Tissue.PORTAL: 90, Tissue.HEPATIC: 90, Tissue.SPLEEN: 560, Tissue.KIDNEY_CORTEX: 600,
    Tissue.KIDNEY_MEDULLA: 750, Tissue.STOMACH_WALL: 380, Tissue.STOMACH_CONTENT: 1300, Tissue.GAS: 0, Tissue.BOWEL: 500,
    Tissue.GALLBLADDER: 1500, Tissue.CLIP: 0,
})
# arterial phase: enhancement over non-contrast (HU); delayed phase: this fraction of portal-venous enhancement
_ARTERIAL_GAIN = MappingProxyType({
    Tissue.HEART: 220, Tissue.AORTA: 280, Tissue.LUNG_VESSEL: 200, Tissue.PORTAL: 70, Tissue.HEPATIC: 10, Tissue.IVC: 30,
    Tissue.LIVER: 15, Tissue.SPLEEN: 70, Tissue.KIDNEY_CORTEX: 170, Tissue.KIDNEY_MEDULLA: 30, Tissue.STOMACH_WALL: 50,
    Tissue.BOWEL: 30, Tissue.MUSCLE: 8,
})
_DELAYED_FRACTION = 0.55
_FAT_FRACTION = MappingProxyType({Tissue.FAT: 0.9, Tissue.MARROW: 0.5})  # of the T1 signal


def sample_intensities(rng: np.random.Generator, anat: dict) -> dict:
    """Per-seed tissue intensities {modality: {tissue name: value}} including each lesion and core."""
    out: dict[str, dict[str, float]] = {m: {} for m in MODALITIES}
    for tissue, values in _BASE.items():
        jitter = rng.normal(0, [4.0, 8.0, 25.0])
        for m, v, j in zip(MODALITIES, values, jitter):
            fixed = tissue in (Tissue.AIR, Tissue.GAS, Tissue.CLIP, Tissue.CORTEX)
            out[m][tissue.name] = float(v if fixed else v + j)
    _derive(out)
    for i, les in enumerate(anat["lesions"]):
        hyper = les["enhancement"] == "hyper"
        out["nc_ct"][f"LESION{i}"] = out["nc_ct"]["LIVER"] - float(rng.uniform(10, 25))
        out["ce_ct"][f"LESION{i}"] = out["ce_ct"]["LIVER"] + float(rng.uniform(25, 50) if hyper else -rng.uniform(35, 60))
        out["mr_t1"][f"LESION{i}"] = out["mr_t1"]["LIVER"] * float(rng.uniform(0.45, 0.7))
        out["nc_ct"][f"NECROSIS{i}"] = float(rng.uniform(10, 20))
        out["ce_ct"][f"NECROSIS{i}"] = float(rng.uniform(15, 25))
        out["mr_t1"][f"NECROSIS{i}"] = out["mr_t1"]["LIVER"] * float(rng.uniform(0.2, 0.3))
        _derive_lesion(out, i, hyper)
    return out


def _derive(out: dict) -> None:
    """Fill the DERIVED tables of the tissues from the drawn nc_ct, ce_ct and mr_t1 values."""
    for m in DERIVED:
        out[m] = {}
    for tissue in _BASE:
        name = tissue.name
        nc, ce, t1 = out["nc_ct"][name], out["ce_ct"][name], out["mr_t1"][name]
        fixed = tissue in (Tissue.AIR, Tissue.GAS, Tissue.CLIP, Tissue.CORTEX, Tissue.LUNG)
        out["art_ct"][name] = nc if fixed else nc + float(_ARTERIAL_GAIN.get(tissue, 0.3 * (ce - nc)))
        out["del_ct"][name] = nc if fixed else nc + _DELAYED_FRACTION * (ce - nc)
        out["mr_t2"][name] = float(_T2[tissue]) * (t1 / max(_BASE[tissue][2], 1.0) if _BASE[tissue][2] else 1.0)
        out["mr_t1_fat"][name] = _FAT_FRACTION.get(tissue, 0.0) * t1


def _derive_lesion(out: dict, i: int, hyper: bool) -> None:
    """Derived-contrast values of lesion i and its necrotic core (hyper-enhancing lesions light up arterially)."""
    delta = out["ce_ct"][f"LESION{i}"] - out["ce_ct"]["LIVER"]  # the lesion's portal-venous contrast to the liver
    out["art_ct"][f"LESION{i}"] = out["art_ct"]["LIVER"] + (2.0 * abs(delta) if hyper else 0.3 * delta)
    out["del_ct"][f"LESION{i}"] = out["del_ct"]["LIVER"] + 0.4 * delta - (15.0 if hyper else 0.0)
    out["mr_t2"][f"LESION{i}"] = out["mr_t2"]["LIVER"] * (1.5 + out["mr_t1"]["LIVER"] / max(out["mr_t1"][f"LESION{i}"], 1.0) / 2)
    out["mr_t1_fat"][f"LESION{i}"] = 0.0
    out["art_ct"][f"NECROSIS{i}"] = out["nc_ct"][f"NECROSIS{i}"] + 3.0
    out["del_ct"][f"NECROSIS{i}"] = out["ce_ct"][f"NECROSIS{i}"]
    out["mr_t2"][f"NECROSIS{i}"] = 1200.0
    out["mr_t1_fat"][f"NECROSIS{i}"] = 0.0


def intensity_lut(intensities: dict, modality: str) -> np.ndarray:
    """A (256,) float32 lookup table tissue code -> intensity for one modality."""
    table = intensities[modality]
    lut = np.full(256, table["AIR"], np.float32)
    for name, value in table.items():
        if name.startswith("LESION"):
            lut[Tissue.LESION + int(name[6:])] = value
        elif name.startswith("NECROSIS"):
            lut[Tissue.NECROSIS + int(name[8:])] = value
        else:
            lut[Tissue[name]] = value
    return lut


def ct_image(rng: np.random.Generator, clean_hu: np.ndarray, noise_hu: float) -> np.ndarray:
    """CT (z, y, x) int16 HU: clean image plus spatially correlated Gaussian noise of std noise_hu."""
    noise = ndimage.gaussian_filter(rng.standard_normal(clean_hu.shape).astype(np.float32), 0.7)
    noise *= np.float32(noise_hu / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(clean_hu + noise), *CT_RANGE_HU).astype(np.int16)


def mr_image(rng: np.random.Generator, clean: np.ndarray, bias_amplitude: float, noise_fraction: float, reference: float) -> np.ndarray:
    """T1 MR (z, y, x) int16: clean signal times a smooth bias field, with Rician noise.

    The bias field is exp of a random quadratic polynomial of the normalised voxel position,
    scaled so that it spans about ±bias_amplitude; noise std is noise_fraction x reference.
    """
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in clean.shape]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    terms = [x, y, z, x * y, y * z, x * z, x * x - 0.33, y * y - 0.33, z * z - 0.33]
    coef = rng.normal(0, 1, len(terms))
    poly = sum(np.float32(c) * t for c, t in zip(coef, terms))
    poly = poly / np.float32(max(float(np.abs(poly).max()), 1e-6))
    biased = clean * np.exp(np.float32(bias_amplitude) * poly)
    sigma = np.float32(noise_fraction * reference)
    n1 = rng.standard_normal(clean.shape).astype(np.float32) * sigma
    n2 = rng.standard_normal(clean.shape).astype(np.float32) * sigma
    return np.clip(np.rint(np.sqrt((biased + n1) ** 2 + n2**2)), 0, 32767).astype(np.int16)


def uptake_lut(lesion_ratios: list[float], necrotic_uptake: float) -> np.ndarray:
    """(256,) float32 relative uptake per tissue inside the liver: 1 for parenchyma, the
    tumour-to-normal ratio for lesion i, necrotic_uptake x ratio for its core, 0.2 in large vessels."""
    lut = np.ones(256, np.float32)
    lut[[Tissue.PORTAL, Tissue.HEPATIC, Tissue.IVC]] = 0.2
    for i, tn in enumerate(lesion_ratios):
        lut[Tissue.LESION + i] = tn
        lut[Tissue.NECROSIS + i] = tn * necrotic_uptake
    return lut


def activity_fractions(liver_weight: np.ndarray, lungs: np.ndarray, body: np.ndarray, lung_shunt: float, body_fraction: float) -> np.ndarray:
    """Fraction of the activity in each voxel (z, y, x), summing to 1.

    (1 - body_fraction) x (1 - lung_shunt) goes to the liver in proportion to liver_weight,
    (1 - body_fraction) x lung_shunt uniformly to the lung voxels, body_fraction uniformly to the
    other body voxels. Raises ValueError when a compartment is empty (outside the field of view).
    """
    parts = [
        (liver_weight.astype(np.float32), (1 - body_fraction) * (1 - lung_shunt), "liver"),
        (lungs.astype(np.float32), (1 - body_fraction) * lung_shunt, "lungs"),
        (body.astype(np.float32), body_fraction, "body"),
    ]
    out = np.zeros(liver_weight.shape, np.float32)
    for weight, share, name in parts:
        total = float(weight.sum(dtype=np.float64))
        if share > 0 and total <= 0:
            raise ValueError(f"the emission field of view holds no {name} voxels")
        if share > 0:
            out += weight * np.float32(share / total)
    return out


def blur(image: np.ndarray, fwhm_mm: float, spacing_mm_xyz) -> np.ndarray:
    """Gaussian blur with the given FWHM (mm) on a grid with ITK-ordered spacing; 0 = no blur."""
    if fwhm_mm <= 0:
        return image
    sigma_vox = [fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / s for s in np.asarray(spacing_mm_xyz)[::-1]]
    return ndimage.gaussian_filter(image, sigma_vox, mode="constant", truncate=3.5)


def spect_counts(rng: np.random.Generator, fractions: np.ndarray, total_counts: float, fwhm_mm: float, spacing_mm_xyz) -> tuple[np.ndarray, float]:
    """SPECT counts (z, y, x) int32 and their expected sum, from activity fractions."""
    expected = blur(fractions * total_counts, fwhm_mm, spacing_mm_xyz)
    return rng.poisson(expected).astype(np.int32), float(expected.sum())


def pet_bq_per_ml(rng: np.random.Generator, fractions: np.ndarray, activity_gbq: float, counts_per_gbq: float, fwhm_mm: float, spacing_mm_xyz) -> tuple[np.ndarray, float]:
    """PET (z, y, x) float32 Bq/ml and the expected activity (Bq) in the image, from activity fractions."""
    voxel_ml = float(np.prod(spacing_mm_xyz)) / 1000.0
    expected_bq = blur(fractions * (activity_gbq * 1e9), fwhm_mm, spacing_mm_xyz)
    counts_per_bq = counts_per_gbq / 1e9
    counts = rng.poisson(expected_bq * counts_per_bq)
    return (counts / (counts_per_bq * voxel_ml)).astype(np.float32), float(expected_bq.sum())

"""Tissue maps of real anatomy for the synthetic generator, from multi-organ label maps of real scans.

SynthSeg (Billot et al. 2023) trains on images generated from label maps of real anatomy. Our
phantom's maps are one family of made-up shapes; the label maps of real scans (TotalSegmentator's
classes on its public example scans, AMOS's 15 organs) carry real livers and their real neighbours.
This module turns one such label map into the generator's tissue codes (`sirtjax.phantom.raster.Tissue`,
plus the few codes below) on an isotropic grid:

- each labelled structure becomes the tissue code of its kind (every vertebra and rib is bone, every
  bowel segment bowel, ...), so that one random contrast per code treats like tissues alike;
- where the scan's image is given, what the labels leave out is split by intensity: outside the body
  air; in the body, for a CT by Hounsfield units (gas, fat, soft tissue, bone), for an MR by three
  intensity clusters (dark, middle, bright); inside a few labelled organs, gas (bowel, stomach),
  lung vessels, bone cortex and marrow, and the liver's vessels (voxels far brighter or darker
  than its parenchyma) get their own codes;
- without an image (label maps published alone), the unlabelled region is one code, within an
  approximate body (the labels' union grown by ``LABELS_ONLY_BODY_MM``), air beyond;
- everywhere beyond the scanned volume is ``OUTSIDE``: the generator renders it as the inference
  padding, as an image cut by its field of view, with no label.

Approximate by design: intensity thresholds and clusters stand in for tissue labels the scans do not
have, and label boundaries are resampled with SimpleITK's label-Gaussian interpolator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from sirtjax.errors import InputError
from sirtjax.io import read_volume, to_sitk
from sirtjax.phantom.raster import Tissue
from sirtjax.segmentation.preprocess import canonical_grid
from sirtjax.train.data import save_npz_atomic
from sirtjax.train.label_maps import FAR_MM, OUTSIDE, PHANTOM_CODES
from sirtjax.volume import Grid, Volume

PANCREAS = PHANTOM_CODES  # codes of their own, past the phantom's and the procedural lesions' (label_maps.N_CODES)
ADRENAL = PHANTOM_CODES + 1
UNLABELLED = PHANTOM_CODES + 2  # body voxels of a label map published without its image
LIVER_DARK = PHANTOM_CODES + 3  # liver voxels far darker than the parenchyma (vessels on non-contrast scans, cysts, lesions)
COLON = PHANTOM_CODES + 4
BLADDER = PHANTOM_CODES + 5
CYST = PHANTOM_CODES + 6
LABELS_ONLY_BODY_MM = 40.0

_BONE, _MUSCLE, _ARTERY, _VEIN = Tissue.CORTEX, Tissue.MUSCLE, Tissue.AORTA, Tissue.IVC


def _totalsegmentator() -> dict[int, int]:
    """TotalSegmentator v2 CT classes ('total') -> tissue codes."""
    codes = {1: Tissue.SPLEEN, 2: Tissue.KIDNEY_CORTEX, 3: Tissue.KIDNEY_CORTEX, 4: Tissue.GALLBLADDER, 5: Tissue.LIVER,
             6: Tissue.STOMACH_CONTENT, 7: PANCREAS, 8: ADRENAL, 9: ADRENAL, 15: Tissue.STOMACH_WALL, 16: Tissue.GAS,
             17: _MUSCLE, 18: Tissue.BOWEL, 19: Tissue.BOWEL, 20: COLON, 21: BLADDER, 22: _MUSCLE, 23: CYST, 24: CYST,
             51: Tissue.HEART, 52: _ARTERY, 53: Tissue.LUNG_VESSEL, 54: _ARTERY, 55: _ARTERY, 56: _ARTERY, 57: _ARTERY,
             58: _ARTERY, 59: _VEIN, 60: _VEIN, 61: Tissue.HEART, 62: _VEIN, 63: _VEIN, 64: Tissue.PORTAL, 65: _ARTERY,
             66: _ARTERY, 67: _VEIN, 68: _VEIN, 79: Tissue.CSF, 90: Tissue.CSF, 116: _BONE, 117: Tissue.DISC}
    codes.update({k: Tissue.LUNG for k in range(10, 15)})
    codes.update({k: _BONE for k in (*range(25, 51), *range(69, 79), 91, *range(92, 116))})
    codes.update({k: _MUSCLE for k in range(80, 90)})
    return codes


def _totalsegmentator_mr() -> dict[int, int]:
    """TotalSegmentator v2 MR classes ('total_mr') -> tissue codes."""
    codes = {1: Tissue.SPLEEN, 2: Tissue.KIDNEY_CORTEX, 3: Tissue.KIDNEY_CORTEX, 4: Tissue.GALLBLADDER, 5: Tissue.LIVER,
             6: Tissue.STOMACH_CONTENT, 7: PANCREAS, 8: ADRENAL, 9: ADRENAL, 10: Tissue.LUNG, 11: Tissue.LUNG,
             12: Tissue.STOMACH_WALL, 13: Tissue.BOWEL, 14: Tissue.BOWEL, 15: COLON, 16: BLADDER, 17: _MUSCLE,
             18: _BONE, 19: _BONE, 20: Tissue.DISC, 21: Tissue.CSF, 22: Tissue.HEART, 23: _ARTERY, 24: _VEIN,
             25: Tissue.PORTAL, 26: _ARTERY, 27: _ARTERY, 28: _VEIN, 29: _VEIN, 50: Tissue.CSF}
    codes.update({k: _BONE for k in range(30, 40)})
    codes.update({k: _MUSCLE for k in range(40, 50)})
    return codes


def _amos() -> dict[int, int]:
    """AMOS 2022 classes -> tissue codes."""
    return {1: Tissue.SPLEEN, 2: Tissue.KIDNEY_CORTEX, 3: Tissue.KIDNEY_CORTEX, 4: Tissue.GALLBLADDER,
            5: Tissue.STOMACH_WALL, 6: Tissue.LIVER, 7: Tissue.STOMACH_CONTENT, 8: _ARTERY, 9: _VEIN, 10: PANCREAS,
            11: ADRENAL, 12: ADRENAL, 13: Tissue.BOWEL, 14: BLADDER, 15: _MUSCLE}


SCHEMES: dict[str, dict[int, int]] = {"totalsegmentator": _totalsegmentator(), "totalsegmentator_mr": _totalsegmentator_mr(),
                                      "amos": _amos()}
LIVER_LABEL = {"totalsegmentator": 5, "totalsegmentator_mr": 5, "amos": 6}


@dataclasses.dataclass(frozen=True)
class LabelMapSource:
    """One real scan's multi-organ label map (and, optionally, its image) as the manifest names them."""

    name: str
    labels: Path
    scheme: str  # a key of SCHEMES
    image: Path | None = None
    modality: str | None = None  # 'ct' or 'mr' when image is given


def label_map_source(manifest: Mapping[str, dict], name: str) -> LabelMapSource:
    """The named label map of a real-scan manifest (`sirtjax.segmentation.validation.read_manifest`)."""
    if name not in manifest["label_maps"]:
        raise InputError(name, f"no label map of that name; the manifest has {sorted(manifest['label_maps'])}")
    e = manifest["label_maps"][name]
    if e["scheme"] not in SCHEMES:
        raise InputError(name, f"unknown label scheme {e['scheme']!r}; expected one of {sorted(SCHEMES)}")
    image = e.get("image")
    return LabelMapSource(name, Path(e["labels"]), e["scheme"], None if image is None else Path(image), e.get("modality"))


def _body(image: np.ndarray, threshold: float) -> np.ndarray:
    """The body: the largest component above `threshold`, its holes filled slice by slice (gas in the bowel, lungs)."""
    above = image > threshold
    lab, n = ndimage.label(above)
    if n == 0:
        return above
    body = lab == (1 + int(np.argmax(ndimage.sum(above, lab, range(1, n + 1)))))
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def _ct_tissues(codes: np.ndarray, labels: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Split a CT's unlabelled body and some labelled organs by Hounsfield units (see the module docstring)."""
    body = _body(hu, -500.0)
    free = body & (labels == 0)
    codes = np.where(free, np.select([hu < -400, hu < -25, hu < 150], [Tissue.GAS, Tissue.FAT, _MUSCLE], _BONE), codes)
    gut = np.isin(codes, (Tissue.BOWEL, COLON, Tissue.STOMACH_CONTENT, Tissue.STOMACH_WALL))
    codes = np.where(gut & (hu < -300), Tissue.GAS, codes)
    codes = np.where((codes == Tissue.LUNG) & (hu > -500), Tissue.LUNG_VESSEL, codes)
    codes = np.where((codes == _BONE) & (hu < 350), Tissue.MARROW, codes)
    return np.where(~body & (labels == 0), Tissue.AIR, codes)


def _mr_tissues(codes: np.ndarray, labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Split an MR's unlabelled body into three intensity clusters (dark, middle, bright), air outside it."""
    body = _body(image, _otsu(image))
    free = body & (labels == 0)
    values = np.log1p(np.maximum(image[free], 0.0)).astype(np.float64)
    if values.size < 3:
        raise ValueError("the MR shows no body to cluster")
    centres, _ = kmeans2(values[:, None], np.quantile(values, [0.1, 0.5, 0.9])[:, None], minit="matrix", seed=0)
    order = np.argsort(centres[:, 0])
    nearest = np.argmin(np.abs(np.log1p(np.maximum(image, 0.0))[..., None] - centres[order, 0]), axis=-1)
    cluster = np.asarray((Tissue.GAS, _MUSCLE, Tissue.FAT), np.uint8)[nearest]
    codes = np.where(free, cluster, codes)
    return np.where(~body & (labels == 0), Tissue.AIR, codes)


def _otsu(image: np.ndarray) -> float:
    """Otsu's threshold of an image (SimpleITK)."""
    f = sitk.OtsuThresholdImageFilter()
    f.Execute(sitk.GetImageFromArray(np.asarray(image, np.float32)))
    return float(f.GetThreshold())


def _liver_parts(codes: np.ndarray, liver: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Liver voxels far brighter (vessels with contrast) or darker (vessels without, cysts) than the parenchyma's
    median, by more than 3 robust standard deviations, get their own codes."""
    if not liver.any():
        return codes
    values = image[liver].astype(np.float64)
    med = np.median(values)
    spread = max(1.4826 * np.median(np.abs(values - med)), 1e-6)
    codes = np.where(liver & (image > med + 3 * spread), Tissue.HEPATIC, codes)
    return np.where(liver & (image < med - 3 * spread), LIVER_DARK, codes)


def tissue_codes(labels: np.ndarray, scheme: str, image: np.ndarray | None = None, modality: str | None = None,
                 spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Tissue codes (uint8, the label map's grid) of a multi-organ label map, its unlabelled region split by the
    image's intensities when given (see the module docstring)."""
    table = SCHEMES[scheme]
    lut = np.full(max(max(table), int(labels.max())) + 1, UNLABELLED, np.uint8)
    lut[0] = UNLABELLED
    for label, code in table.items():
        lut[label] = code
    codes = lut[labels]
    liver = labels == LIVER_LABEL[scheme]
    if image is None:
        grown = ndimage.distance_transform_edt(labels == 0, sampling=spacing_zyx_mm) <= LABELS_ONLY_BODY_MM
        body = np.stack([ndimage.binary_fill_holes(s) for s in grown])
        return np.where(body, codes, Tissue.AIR).astype(np.uint8)
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mr' with an image, got {modality!r}")
    codes = _ct_tissues(codes, labels, image) if modality == "ct" else _mr_tissues(codes, labels, image)
    return _liver_parts(codes, liver, image).astype(np.uint8)


def _resample_labels(vol: Volume, grid: Grid, default: int) -> np.ndarray:
    """A label map (uint8) resampled onto `grid` by SimpleITK's label-Gaussian interpolator (smooth boundaries)."""
    ref = sitk.Image([int(n) for n in grid.size_xyz], sitk.sitkUInt8)
    ref.SetSpacing(tuple(float(s) for s in np.asarray(grid.spacing_mm)))
    ref.SetOrigin(tuple(float(s) for s in np.asarray(grid.origin_mm)))
    ref.SetDirection(tuple(float(s) for s in np.asarray(grid.direction).ravel()))
    moving = to_sitk(vol.with_array(np.asarray(vol.array, np.uint8)))
    out = sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkLabelGaussian, default, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def real_patient(source: LabelMapSource, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(tissue codes uint8, liver distance uint8 mm: 0 inside, saturating at 255) of a real label map on the
    identity-direction grid of `spacing_mm` over its scan; ``OUTSIDE`` beyond the scan (the generator's input)."""
    labels = read_volume(source.labels)
    lab = np.asarray(labels.array).astype(np.int32)
    if lab.min() < 0 or lab.max() > 255:
        raise InputError(source.labels, f"label values must lie in 0-255, got {lab.min()}-{lab.max()}")
    image = None
    if source.image is not None:
        img = read_volume(source.image)
        image = np.asarray(_on(img, labels).array, np.float32)
    spacing_zyx = tuple(float(s) for s in np.asarray(labels.spacing_mm)[::-1])
    codes = labels.with_array(tissue_codes(lab, source.scheme, image, source.modality, spacing_zyx))
    grid = canonical_grid(labels, (spacing_mm,) * 3)
    tissue = _resample_labels(codes, grid, OUTSIDE)
    liver = _resample_labels(labels.with_array((lab == LIVER_LABEL[source.scheme]).astype(np.uint8)), grid, 0) > 0
    if not liver.any():
        raise InputError(source.labels, "the label map has no liver")
    dist = ndimage.distance_transform_edt(~liver, sampling=spacing_mm)
    return tissue, np.clip(np.ceil(dist), 0, FAR_MM).astype(np.uint8)


def _on(image: Volume, labels: Volume) -> Volume:
    """The image on the label map's grid (trilinear; the labels' grid is the image's for the manifest's scans)."""
    from sirtjax.preprocess import resample_to
    from sirtjax.volume import same_grid

    return image if same_grid(image, labels) else resample_to(image, labels, order=1, default_value=float(np.min(np.asarray(image.array))))


def cached_real_patient(source: LabelMapSource, spacing_mm: float, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`real_patient`, cached as .npz in cache_dir under a name that changes with the files' contents and the
    code tables (so an edited label map or mapping is never served stale)."""
    digest = hashlib.sha1()
    for p in (source.labels, source.image):
        if p is not None:
            files = sorted(p.iterdir()) if p.is_dir() else [p]
            for f in files:
                digest.update(f.read_bytes())
    digest.update(json.dumps({k: sorted((int(a), int(b)) for a, b in v.items()) for k, v in SCHEMES.items()}).encode())
    digest.update(f"{source.scheme} {source.modality} {spacing_mm} {LABELS_ONLY_BODY_MM}".encode())
    path = None if cache_dir is None else Path(cache_dir) / f"real_{source.name}_{digest.hexdigest()[:10]}.npz"
    if path is not None and path.is_file():
        with np.load(path) as d:
            return d["tissue"], d["liver_mm"]
    tissue, liver_mm = real_patient(source, spacing_mm)
    if path is not None:
        save_npz_atomic(path, tissue=tissue, liver_mm=liver_mm)
    return tissue, liver_mm

"""Real-scan validation: the vendored real scans (``datasets/real/manifest.json``) and a liver model's result on each.

A model is judged on real scans before it ships (the rule is in the liver model card); this module reads the
manifest that lists them and measures one model on one scan as `sirtjax segment` runs it: DSC against the reference
liver on the scan's own grid, volumes, how many large components the thresholded prediction had before the largest
was kept, and the time. `benchmarks/segmentation/real.py` tabulates it, `tests/test_real_scans.py` holds the shipped
model to its floors.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from flax import nnx

from sirtjax.errors import InputError
from sirtjax.metrics import dice
from sirtjax.segmentation.infer import predict_probability
from sirtjax.segmentation.postprocess import component_sizes, liver_mask
from sirtjax.segmentation.preprocess import prepare_label
from sirtjax.volume import Volume

MANIFEST = Path(__file__).resolve().parents[2] / "datasets" / "real" / "manifest.json"  # in a clone, not in a wheel


@dataclasses.dataclass(frozen=True)
class RealScan:
    """One vendored real scan: its image (a file or DICOM folder), multi-organ labels and what the liver is."""

    name: str
    image: Path
    labels: Path
    liver_label: int
    modality: str
    patient: str
    held_out: bool = False  # never trained on nor used to choose a model


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """A liver model's result on one real scan."""

    scan: str
    dsc: float
    volume_ml: float
    reference_ml: float
    stray_ml: float  # the largest component of the thresholded prediction other than the one kept (0 if none)
    seconds: float

    @property
    def volume_error_pct(self) -> float:
        """Segmented minus reference liver volume, in % of the reference."""
        return 100.0 * (self.volume_ml - self.reference_ml) / self.reference_ml


def read_manifest(path: str | Path = MANIFEST) -> dict[str, dict[str, dict]]:
    """The real-scan manifest: {'scans': {name: entry}, 'label_maps': {name: entry}}, image and label paths resolved
    against the manifest's folder; InputError naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        resolve = lambda e: {k: (str(path.parent / v) if k in ("image", "labels") else v) for k, v in e.items()}  # noqa: E731
        return {kind: {name: resolve(e) for name, e in raw[kind].items()} for kind in ("scans", "label_maps")}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(path, f"cannot read the real-scan manifest: {exc}") from None


def real_scans(path: str | Path = MANIFEST) -> dict[str, RealScan]:
    """The manifest's scans by name (:func:`read_manifest`)."""
    return {name: RealScan(name, Path(e["image"]), Path(e["labels"]), int(e["liver_label"]), str(e["modality"]), str(e["patient"]),
                           bool(e.get("held_out", False)))
            for name, e in read_manifest(path)["scans"].items()}


# CT variants of a real scan, as the held-out checks make them from a real contrast CT (the remaps:
# `sirtjax.phantom.mr_like`): name -> (modality of the result, what it is)
VARIANTS = {
    "as scanned": ("", "the scan itself"),
    "non-contrast": ("ct", "enhancement removed, the liver pulled to native HU (`phantom.mr_like.non_contrast_like`)"),
    "MR-like": ("mr", "T1-like remap with Rician noise (`phantom.mr_like.mr_like`, seed 0)"),
    "cut close": ("", "cut to the liver's box and 10 mm around it, as a close crop around a liver is"),
}
CLOSE_CROP_MM = 10.0


def scan_variant(scan: RealScan, variant: str) -> tuple[Volume, np.ndarray, str]:
    """(image, reference liver (bool, the image's grid), modality) of a real scan or of one of its VARIANTS (the remaps
    are for CT scans)."""
    from sirtjax.io import read_volume
    from sirtjax.phantom.mr_like import mr_like, non_contrast_like
    from sirtjax.preprocess import crop_to_mask

    image = read_volume(scan.image)
    liver = np.asarray(prepare_label(read_volume(scan.labels), image).array) == scan.liver_label
    modality = VARIANTS[variant][0] or scan.modality
    if variant in ("non-contrast", "MR-like") and scan.modality != "ct":
        raise ValueError(f"the {variant} variant remaps a CT; {scan.name} is {scan.modality.upper()}")
    if variant == "non-contrast":
        image = non_contrast_like(image)
    elif variant == "MR-like":
        image = mr_like(image, np.random.default_rng(0))
    elif variant == "cut close":
        cropped = crop_to_mask(image.with_array(np.stack([np.asarray(image.array, np.float32), liver], -1)), liver, margin_mm=CLOSE_CROP_MM)
        image, liver = cropped.with_array(np.asarray(cropped.array)[..., 0]), np.asarray(cropped.array)[..., 1] > 0
    return image, liver, modality


def evaluate_scan(model: nnx.Module, spec: dict, scan: RealScan, *, variant: str = "as scanned", threshold: float = 0.5) -> ScanResult:
    """Segment one real scan's liver (or one of its VARIANTS) as `sirtjax segment` does and compare it with the
    reference on the scan's grid."""
    image, reference, modality = scan_variant(scan, variant)
    start = time.perf_counter()
    prob = predict_probability(model, spec, image, modality=modality)
    mask = liver_mask(np.asarray(prob.array), threshold=threshold) > 0
    seconds = time.perf_counter() - start
    voxel_ml = float(np.prod(np.asarray(image.spacing_mm))) / 1000.0
    sizes_ml = np.sort(component_sizes(np.asarray(prob.array) > threshold))[::-1] * voxel_ml
    return ScanResult(scan.name if variant == "as scanned" else f"{scan.name} {variant}", dice(mask, reference), float(mask.sum()) * voxel_ml, float(reference.sum()) * voxel_ml,
                      float(sizes_ml[1]) if sizes_ml.size > 1 else 0.0, seconds)

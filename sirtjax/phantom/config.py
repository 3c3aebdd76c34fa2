"""Every generating parameter of a phantom study, with defaults, as frozen dataclasses.

Lengths are in mm and given in ITK (x, y, z) order; the canonical patient frame is LPS
(x towards the patient's left, y posterior, z superior) with its origin near the liver.
A :class:`PhantomConfig` is recorded in full in ``truth.json``.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

SESSIONS = ("maa", "diag_ct", "diag_mr", "y90")
"""Postures (acquisitions): MAA SPECT/CT, diagnostic CT, diagnostic MR, 90Y PET/CT."""

IMAGE_SESSION = MappingProxyType({
    "maa_ct": "maa",
    "maa_spect": "maa",
    "diag_ct": "diag_ct",
    "diag_mr": "diag_mr",
    "y90_ct": "y90",
    "y90_pet": "y90",
})
"""The posture each image was acquired in; SPECT and PET share their CT's world frame."""

ANATOMICAL_IMAGES = ("maa_ct", "diag_ct", "diag_mr", "y90_ct")
LABEL_KINDS = ("liver", "lesions", "lungs", "labels")


@dataclasses.dataclass(frozen=True)
class ImageGrid:
    """Field of view of one image: spacing and extent (x, y, z mm), placement and orientation.

    The grid is centred on the canonical point (0, body centre y, ``center_z_mm``) carried into the
    session's world frame, then moved by up to ``jitter_mm`` (per axis, same draw for every image of
    a session). ``direction`` is ``identity``, ``flip_xy`` (diag(-1, -1, 1), RAS-stored) or
    ``oblique`` (a random rotation of up to ``oblique_max_deg``). With probability
    ``crop_probability`` the z range is shifted so that it cuts 10-30 mm off the liver top or bottom.
    """

    spacing_mm: tuple[float, float, float]
    fov_mm: tuple[float, float, float]
    center_z_mm: float = 0.0
    direction: str = "identity"
    jitter_mm: float = 10.0
    crop_probability: float = 0.0
    oblique_max_deg: float = 8.0

    def __post_init__(self):
        if len(self.spacing_mm) != 3 or len(self.fov_mm) != 3 or min(self.spacing_mm) <= 0 or min(self.fov_mm) <= 0:
            raise ValueError(f"ImageGrid needs 3 positive spacings and fields of view, got {self.spacing_mm}, {self.fov_mm}")
        if self.direction not in ("identity", "flip_xy", "oblique"):
            raise ValueError(f"unknown direction '{self.direction}' (identity, flip_xy or oblique)")
        if not 0.0 <= self.crop_probability <= 1.0 or self.jitter_mm < 0 or self.oblique_max_deg < 0:
            raise ValueError("crop_probability must be in [0, 1]; jitter_mm and oblique_max_deg non-negative")

    def size_xyz(self, spacing_scale: float = 1.0) -> tuple[int, int, int]:
        """Number of voxels (x, y, z) covering the field of view at the scaled spacing."""
        return tuple(max(1, int(round(f / (s * spacing_scale)))) for f, s in zip(self.fov_mm, self.spacing_mm))


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Generating parameters of a study; defaults give ~128x112x96 CT grids at 3 mm.

    ``spacing_scale`` multiplies every image spacing and the canonical spacing (fields of view
    stay), so ``spacing_scale=2`` makes a study ~8x smaller and faster; :meth:`small` is the preset
    for tests.
    """

    spacing_scale: float = 1.0
    canonical_spacing_mm: float = 2.0
    # anatomy
    n_lesions: tuple[int, int] = (1, 6)
    lesion_diameter_mm: tuple[float, float] = (10.0, 60.0)
    necrosis_probability: float = 0.5
    hyperenhancing_probability: float = 0.3
    n_clips: tuple[int, int] = (2, 4)
    clip_label_radius_mm: float = 5.0
    liver_deformation_mm: float = 12.0
    bmi: tuple[float, float] = (19.0, 32.0)  # body-mass index range: habitus, subcutaneous fat
    liver_scale: tuple[float, float] = (0.92, 1.1)  # liver size factor range (times (height / 175 cm)^0.3)
    left_lobe_scale: tuple[float, float] = (0.7, 1.3)  # left-lobe lateral extent factor range
    left_lobe_shift_mm: float = 0.0  # left lobe moved to the patient's left (+x), e.g. 40 for "far left"
    liver_ap_scale: float = 1.0  # antero-posterior liver size factor (< 1: sagittally compressed)
    liver_caudal_scale: float = 1.0  # right lobe's cranio-caudal size factor, grown downwards (> 1: hepatomegaly)
    arms_down: bool = False  # arms at the sides of the trunk (in a wide field of view), not raised out of it
    # postures (session world frame vs canonical)
    rotation_max_deg: float = 4.0
    translation_max_mm: tuple[float, float, float] = (30.0, 30.0, 60.0)
    scaling_max: float = 0.02
    breathing_mm: tuple[float, float] = (3.0, 15.0)
    posture_rbf_count: int = 4
    posture_rbf_mm: float = 4.0
    # images
    maa_ct: ImageGrid = ImageGrid((3.0, 3.0, 3.0), (384.0, 336.0, 240.0), 0.0, "flip_xy", crop_probability=0.25)
    maa_spect: ImageGrid = ImageGrid((4.42, 4.42, 4.42), (424.3, 353.6, 442.0), 80.0, "identity", jitter_mm=0.0)
    diag_ct: ImageGrid = ImageGrid((3.0, 3.0, 3.0), (384.0, 336.0, 288.0), -15.0, "identity")
    diag_mr: ImageGrid = ImageGrid((3.2, 3.2, 4.0), (384.0, 332.8, 256.0), 0.0, "oblique")
    y90_ct: ImageGrid = ImageGrid((3.0, 3.0, 3.5), (384.0, 336.0, 252.0), 0.0, "identity", crop_probability=0.25)
    y90_pet: ImageGrid = ImageGrid((4.0, 4.0, 4.0), (400.0, 344.0, 440.0), 80.0, "identity", jitter_mm=0.0)
    diag_ct_phase: str = "portal"  # contrast phase of diag_ct: portal, arterial or delayed
    diag_mr_sequence: str = "t1"  # diag_mr: t1, t2 (T2-weighted) or opposed (T1 opposed-phase)
    ct_noise_hu: float = 25.0
    contrast_ct_noise_hu: float = 12.0
    mr_noise_fraction: float = 0.03
    mr_bias_amplitude: float = 0.25
    # emission
    maa_activity_mbq: tuple[float, float] = (100.0, 200.0)
    spect_counts_per_mbq: float = 2.0e4
    spect_fwhm_mm: float = 12.0
    pet_fwhm_mm: float = 8.0
    pet_counts_per_gbq: float = 4.0e5
    tumour_to_normal: tuple[float, float] = (1.5, 8.0)
    necrotic_uptake: float = 0.1
    lung_shunt_fraction: tuple[float, float] = (0.02, 0.2)
    body_background_fraction: float = 0.01
    y90_variation: float = 0.2
    # prescription targets written to study.json
    target_doses_gy: tuple[tuple[str, float], ...] = (
        ("tumour", 120.0),
        ("normal_liver", 40.0),
        ("whole_liver", 50.0),
        ("lung_limit", 30.0),
    )

    def __post_init__(self):
        positive = ("spacing_scale", "canonical_spacing_mm", "spect_counts_per_mbq", "pet_counts_per_gbq", "clip_label_radius_mm")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"PhantomConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("spect_fwhm_mm", "pet_fwhm_mm", "ct_noise_hu", "contrast_ct_noise_hu", "mr_noise_fraction", "mr_bias_amplitude", "y90_variation"):
            if getattr(self, name) < 0:
                raise ValueError(f"PhantomConfig.{name} must not be negative, got {getattr(self, name)}")
        ranges = ("bmi", "liver_scale", "left_lobe_scale", "n_lesions", "lesion_diameter_mm", "n_clips", "breathing_mm", "maa_activity_mbq", "tumour_to_normal", "lung_shunt_fraction")
        for name in ranges:
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"PhantomConfig.{name} must be a range 0 <= low <= high, got {(lo, hi)}")
        if self.bmi[0] < 15.0 or self.bmi[1] > 45.0:  # the canonical grid holds a BMI-45 body with its arms down
            raise ValueError(f"PhantomConfig.bmi must lie within 15-45, got {self.bmi}")
        if self.liver_scale[0] <= 0 or self.left_lobe_scale[0] <= 0 or not (self.liver_ap_scale > 0 and self.liver_caudal_scale > 0):
            raise ValueError("liver and left-lobe scale factors must be positive")
        if self.lesion_diameter_mm[0] <= 0 or self.tumour_to_normal[0] <= 0 or self.lung_shunt_fraction[1] >= 1:
            raise ValueError("lesion diameters and tumour-to-normal ratios must be positive, lung shunt fractions below 1")
        if self.diag_ct_phase not in ("portal", "arterial", "delayed") or self.diag_mr_sequence not in ("t1", "t2", "opposed"):
            raise ValueError(f"unknown diag_ct_phase {self.diag_ct_phase!r} or diag_mr_sequence {self.diag_mr_sequence!r}")
        for name in ("necrosis_probability", "hyperenhancing_probability", "body_background_fraction", "necrotic_uptake"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PhantomConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def small(cls, **overrides: Any) -> PhantomConfig:
        """A coarse study (about 6 mm CT voxels, 4 mm canonical) that generates in a second or two.

        Clip landmark regions grow to 9 mm so that each covers several voxels of the coarse grids.
        """
        return dataclasses.replace(cls(spacing_scale=2.0, clip_label_radius_mm=9.0), **overrides)

    def grid(self, image: str) -> ImageGrid:
        """The ImageGrid of an image name such as ``maa_ct``."""
        if image not in IMAGE_SESSION:
            raise KeyError(f"unknown image '{image}' (one of {', '.join(IMAGE_SESSION)})")
        return getattr(self, image)

    def to_json(self) -> dict:
        """The configuration as a JSON-serialisable dict (nested grids become dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PhantomConfig:
        """Inverse of :meth:`to_json`."""
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                continue
            value = data[field.name]
            if field.name in IMAGE_SESSION:
                value = ImageGrid(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif field.name == "target_doses_gy":
                value = tuple((str(k), float(v)) for k, v in value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[field.name] = value
        return cls(**kwargs)

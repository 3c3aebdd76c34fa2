"""What the workflows take: anatomical images with their given masks, emission images, study data, options.

Everything here is plain data (Volumes and numbers); reading a study folder into it is
:func:`sirtjax.pipelines.read.plan_inputs` / ``verify_inputs``. Masks are label images on their
image's grid: ``liver`` and ``lungs`` 0/1, ``lesions`` 0 and one id per instance, ``labels``
liver = 1 and one id >= 2 per landmark (lesion or clip), the same id for the same landmark in
every image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from sirtjax.registration.config import Overrides
from sirtjax.volume import Volume, describe_grid

if TYPE_CHECKING:
    from sirtjax.dosimetry.radiobiology import TissueModel
    from sirtjax.dosimetry.recovery import RecoveryCurve
    from sirtjax.segmentation.lesions import LesionSegmentation
    from sirtjax.dosimetry.uncertainty import UncertaintyModel
    from sirtjax.programs import ProgramCache

# Used when the study gives no target dose (thesis 1.5.3: 40 Gy normal liver for the partition
# model, 50 Gy whole liver for the mono-compartment model, 120 Gy tumour); the report says so.
DEFAULT_TARGET_DOSES_GY = {"normal_liver": 40.0, "whole_liver": 50.0, "tumour": 120.0}
PRESCRIPTION_METHODS = ("partition", "mono-compartment", "bsa")
QUICK_REGISTRATION = Overrides(levels=2, finest_mm=12.0, nonrigid_levels=1, iterations=60, image_stages=False)
"""Registration overrides for a quick run (the demo, ``--quick``): 24 and 12 mm levels, non-rigid at 12 mm
only, 60 iterations, no images-only stage; about a third of the presets' time from a cold start, coarser deformations."""

Segmenter = Callable[[Volume, str], Volume]
"""A liver segmenter: (image, modality 'CT' | 'MR') -> 0/1 liver mask on the image's grid."""

ReferenceSegmenter = Callable[[Volume, Volume, Volume], Volume]
"""A liver segmenter by reference: (non-contrast CT, a contrast CT of the same patient, its 0/1 liver mask) -> 0/1 liver
mask on the first image's grid (the registration-segmentation network)."""

LesionSegmenter = Callable[[Volume, str, Volume], "LesionSegmentation"]
"""A lesion segmenter: (image, modality 'CT' | 'MR', 0/1 liver mask on the image's grid) -> lesions found in the liver."""


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """An anatomical image (CT or MR) of one session with the masks the study gives for it (None: not given)."""

    name: str
    modality: str
    image: Volume
    liver: Volume | None = None
    lesions: Volume | None = None
    lungs: Volume | None = None
    labels: Volume | None = None

    def __post_init__(self):
        if self.modality not in ("CT", "MR"):
            raise ValueError(f"{self.name}: an anatomical image is CT or MR, got {self.modality!r}")
        for kind in ("liver", "lesions", "lungs", "labels"):
            mask = getattr(self, kind)
            if mask is not None and tuple(mask.shape) != tuple(self.image.shape):
                raise ValueError(f"{self.name}: the {kind} mask ({describe_grid(mask)}) is not on the image grid "
                                 f"({describe_grid(self.image)})")


@dataclasses.dataclass(frozen=True)
class Session:
    """A treatment session: its anatomical image (the MAA CT or the 90Y CT/MR) and its emission image.

    The emission image (MAA SPECT in counts or 90Y PET in Bq/ml) shares the anatomical image's world
    frame (hybrid scanner), so masks move between them by resampling alone.
    """

    anatomy: Anatomy
    emission: Volume
    emission_name: str


@dataclasses.dataclass(frozen=True)
class StudyData:
    """Patient and prescription data of a study: patient (height_cm, weight_kg), activities, target doses.

    ``activities`` uses the manifest keys (``maa_injected_mbq``, ``y90_planned_gbq``,
    ``y90_injected_gbq``); ``lung_shunt_fraction`` is the planar-scintigraphy LSF in [0, 1) when known,
    ``lung_shunt_source`` where it came from (for the report).
    """

    name: str
    patient: dict
    activities: dict
    target_doses_gy: dict
    lung_shunt_fraction: float | None = None
    lung_shunt_source: str = "planar scintigraphy"

    def __post_init__(self):
        lsf = self.lung_shunt_fraction
        if lsf is not None and not 0.0 <= lsf < 1.0:
            raise ValueError(f"the lung shunt fraction must be in [0, 1), got {lsf}")

    def target_dose_gy(self, kind: str) -> tuple[float, str]:
        """The target dose of kind (normal_liver, whole_liver, tumour) and its source ('study' or 'default')."""
        if kind in self.target_doses_gy:
            return float(self.target_doses_gy[kind]), "study"
        return DEFAULT_TARGET_DOSES_GY[kind], "default"


@dataclasses.dataclass(frozen=True)
class UncertaintyRequest:
    """A dose-uncertainty ensemble of ``members`` plans drawn from the ``stated`` sds (:mod:`sirtjax.dosimetry.uncertainty`);
    with lesions mapped by registration, ``registrations`` more registrations with other sampling keys give the
    lesion maps of its registration source."""

    members: int
    stated: UncertaintyModel
    registrations: int = 0

    def __post_init__(self):
        if not 2 <= self.members <= 1024:
            raise ValueError(f"an uncertainty ensemble has 2-1024 members, got {self.members}")
        if not 0 <= self.registrations <= 32:
            raise ValueError(f"0-32 more registrations for the uncertainty ensemble, got {self.registrations}")


@dataclasses.dataclass(frozen=True)
class PetQuantification:
    """How verify quantifies the 90Y PET against the plan (docs/pet-quantification.md).

    With ``match_fwhm_mm``, the PET (reconstructed at ``pet_fwhm_mm``) and the plan's MAA SPECT (at ``spect_fwhm_mm``)
    are blurred to that common FWHM before the verification's dose and its comparison with the plan, as the
    literature compares them. ``recovery``: the lesions' recovery curve, whose coefficients divide the PET dose's
    lesion means in the report (None: no correction).
    """

    match_fwhm_mm: float | None = None
    pet_fwhm_mm: float | None = None
    spect_fwhm_mm: float | None = None
    recovery: RecoveryCurve | None = None

    def __post_init__(self):
        if self.match_fwhm_mm is not None and not (
                self.pet_fwhm_mm is not None and self.spect_fwhm_mm is not None
                and 0 < self.pet_fwhm_mm <= self.match_fwhm_mm and 0 < self.spect_fwhm_mm <= self.match_fwhm_mm):
            raise ValueError(f"matching to {self.match_fwhm_mm:g} mm needs the PET's and the SPECT's resolutions, "
                             "both positive and no coarser than it")


@dataclasses.dataclass(frozen=True)
class WorkflowOptions:
    """Settings shared by plan() and verify().

    ``registration``: what changes in the chosen registration preset (:class:`sirtjax.registration.Overrides`).
    ``segmenter`` segments the liver where the study gives no liver mask (None: a missing liver mask
    is an error). ``reference_segmenter``, when set, takes precedence over it for a session CT without a
    liver mask when a diagnostic CT has a given one: that liver is carried across (None: not used). ``lesion_segmenter`` finds the lesions of a session whose study gives none, on the
    first diagnostic image (mapped by registration) or else on the session's own image (None: the
    session has no lesions). ``prescription_method`` picks the activity of the predicted dose when the study
    gives no planned activity. ``programs`` keeps the registrations' compiled programs across calls and
    processes (:class:`~sirtjax.programs.ProgramCache`; None: in memory only).
    ``uncertainty``: the dose-uncertainty ensemble of the plan's and the verification's doses (None: none).
    ``radiobiology``: tissue models by compartment kind ('normal_liver', 'lesion'; :mod:`sirtjax.dosimetry.bed_map`)
    for the doses' BED, EUD, NTCP and TCP (None: none). ``pet``: the verification's resolution matching and lesion
    recovery (:class:`PetQuantification`; None: the PET as reconstructed, uncorrected).
    ``rtdose_bits``: Bits Allocated of the RT Dose written for a CT session (32, or 16 for viewers
    that read only 16-bit; :mod:`sirtjax.io.rtdose`).
    ``accept_implausible_liver``: go on with a segmented or carried liver outside 0.6-4.5 L, with a warning (default:
    stop; :func:`sirtjax.pipelines.mapping.liver_of`).
    """

    dose_model: str = "vsv"
    constants: str = "icrp107"
    prescription_method: str = "partition"
    registration: Overrides = Overrides()
    segmenter: Segmenter | None = None
    reference_segmenter: ReferenceSegmenter | None = None
    lesion_segmenter: LesionSegmenter | None = None
    programs: ProgramCache | None = None
    uncertainty: UncertaintyRequest | None = None
    radiobiology: dict[str, TissueModel] | None = None
    pet: PetQuantification | None = None
    rtdose_bits: int = 32
    accept_implausible_liver: bool = False

    def __post_init__(self):
        if self.rtdose_bits not in (16, 32):
            raise ValueError(f"rtdose_bits must be 16 or 32, got {self.rtdose_bits!r}")
        if self.prescription_method not in PRESCRIPTION_METHODS:
            raise ValueError(f"prescription_method must be one of {', '.join(PRESCRIPTION_METHODS)}, "
                             f"got {self.prescription_method!r}")

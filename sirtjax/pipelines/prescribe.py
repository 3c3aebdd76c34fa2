"""``sirtjax prescribe`` as one library call: a :class:`PrescriptionRequest` (numbers, or a MAA SPECT with its masks)
in, a :class:`PrescriptionResult` (the prescription, the lung shunt it used and the inputs it came from) out.

The request's fields are the command's options, and an unusable one raises :class:`~sirtjax.errors.InputError` naming
that option (or the file), so the command line and the library say the same one line. Volumes, T/N ratios and the lung
shunt come from numbers, or from the SPECT's counts in the masks (:func:`~sirtjax.dosimetry.measure_compartments`,
the masks resampled onto the SPECT grid). The lung shunt fraction follows the one precedence that ``plan()`` follows
too (:func:`~sirtjax.dosimetry.activity.choose_lung_shunt`): the given one (``lung_shunt_fraction``, or lung and liver
counts), else the SPECT's counts in the lung mask, else 0 with a warning.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sirtjax.dosimetry.activity import LungShunt, choose_lung_shunt, lung_shunt_fraction
from sirtjax.dosimetry.compartments import MeasuredCompartments, measure_compartments
from sirtjax.dosimetry.constants import LIVER_DENSITY_G_ML, LUNG_MASS_KG
from sirtjax.dosimetry.prescription import Prescription, body_size_problem, bsa_method, mono_compartment, partition
from sirtjax.errors import InputError
from sirtjax.pipelines.inputs import PRESCRIPTION_METHODS
from sirtjax.plausibility import ResultWarning


@dataclasses.dataclass(frozen=True)
class PrescriptionRequest:
    """What to prescribe from: the method (partition, mono-compartment, bsa), its dose target (Gy), the volumes (ml) and
    T/N ratios as numbers or a SPECT with masks (files), the lung shunt, lung mass (kg), density (g/ml), body size."""

    method: str = "partition"
    dose_gy: float | None = None
    liver_volume_ml: float | None = None
    normal_volume_ml: float | None = None
    tumour_volumes_ml: tuple[float, ...] = ()
    tn_ratios: tuple[float, ...] = ()
    spect: Path | None = None
    liver: Path | None = None
    lesions: Path | None = None
    lung: Path | None = None
    lung_shunt_fraction: float | None = None
    lung_counts: float | None = None
    liver_counts: float | None = None
    lung_mass_kg: float = LUNG_MASS_KG
    density_g_ml: float = LIVER_DENSITY_G_ML
    height_m: float | None = None
    weight_kg: float | None = None
    constants: str = "icrp107"


@dataclasses.dataclass(frozen=True)
class PrescriptionResult:
    """A prescription with the lung shunt it used and its inputs: volumes (ml), T/N ratios, density (g/ml), and the
    compartments measured on the SPECT (None: given as numbers)."""

    prescription: Prescription
    lung_shunt: LungShunt
    normal_volume_ml: float
    tumour_volumes_ml: tuple[float, ...]
    tn_ratios: tuple[float, ...]
    density_g_ml: float
    measured: MeasuredCompartments | None

    @property
    def warnings(self) -> tuple[ResultWarning, ...]:
        """The prescription's warnings, then the lung shunt's."""
        return self.prescription.warnings + self.lung_shunt.warnings

    def to_json(self) -> dict:
        """JSON-ready form: the prescription's, with every warning and the inputs it came from."""
        return {**self.prescription.to_dict(), "warnings": [w.to_dict() for w in self.warnings],
                "inputs": {"normal_volume_ml": self.normal_volume_ml,
                           "tumour_volumes_ml": [float(v) for v in self.tumour_volumes_ml],
                           "tn_ratios": [float(r) for r in self.tn_ratios], "density_g_ml": self.density_g_ml,
                           "lsf_source": self.lung_shunt.source,
                           "measured": None if self.measured is None else self.measured.to_dict()}}


@dataclasses.dataclass(frozen=True)
class _Volumes:
    """Normal-liver and tumour volumes (ml), T/N ratios and tumour names, and the SPECT's compartments if measured."""

    normal_ml: float
    tumours_ml: tuple[float, ...]
    tn_ratios: tuple[float, ...]
    names: tuple[str, ...]
    measured: MeasuredCompartments | None = None


def prescribe_activity(request: PrescriptionRequest) -> PrescriptionResult:
    """The administered activity (GBq) of the request's method, with compartment and lung doses (Gy) and warnings."""
    _check_numbers(request)
    volumes = _measured_volumes(request) if request.spect is not None else _given_volumes(request)
    given, source = given_lung_shunt(request.lung_shunt_fraction, request.lung_counts, request.liver_counts)
    measured_lsf = None if volumes.measured is None else volumes.measured.lung_shunt_fraction
    shunt = choose_lung_shunt(given, source, measured_lsf)
    return PrescriptionResult(_prescription(request, volumes, shunt.fraction), shunt, volumes.normal_ml,
                              volumes.tumours_ml, volumes.tn_ratios, request.density_g_ml, volumes.measured)


def given_lung_shunt(lsf: float | None, lung_counts: float | None,
                     liver_counts: float | None) -> tuple[float | None, str]:
    """The given lung shunt fraction and its source: ``lsf``, or lung / (lung + liver) counts, or (None, 'given')."""
    if lsf is not None and (lung_counts is not None or liver_counts is not None):
        raise InputError("--lsf", "give --lsf or --lung-counts/--liver-counts, not both")
    if lsf is not None and not 0.0 <= lsf < 1.0:
        raise InputError("--lsf", f"must be in [0, 1), got {lsf}")
    if lung_counts is None and liver_counts is None:
        return lsf, "given"
    if lung_counts is None or liver_counts is None:
        raise InputError("--lung-counts", "needs both --lung-counts and --liver-counts")
    try:
        return lung_shunt_fraction(lung_counts, liver_counts), "lung and liver counts"
    except ValueError as exc:
        raise InputError("--lung-counts", str(exc)) from None


def _check_numbers(r: PrescriptionRequest) -> None:
    """InputError naming the option: a volume, dose, mass, density, body size or T/N not positive, negative counts."""
    positive = [("--dose-gy", r.dose_gy), ("--liver-ml", r.liver_volume_ml), ("--normal-ml", r.normal_volume_ml),
                ("--lung-mass-kg", r.lung_mass_kg), ("--density", r.density_g_ml), ("--height-m", r.height_m),
                ("--weight-kg", r.weight_kg), *(("--tumour-ml", v) for v in r.tumour_volumes_ml),
                *(("--tn", v) for v in r.tn_ratios)]
    for option, value in positive:
        if value is not None and not value > 0:
            raise InputError(option, f"must be positive, got {value:g}")
    if r.height_m is not None and r.weight_kg is not None and (problem := body_size_problem(r.height_m, r.weight_kg)):
        raise InputError(f"--{problem[0]}-{'m' if problem[0] == 'height' else 'kg'}", problem[1])
    for option, value in (("--lung-counts", r.lung_counts), ("--liver-counts", r.liver_counts)):
        if value is not None and not value >= 0:
            raise InputError(option, f"must be non-negative, got {value:g}")


def _given_volumes(r: PrescriptionRequest) -> _Volumes:
    """Volumes and T/N ratios given as numbers: normal liver from its volume, or the liver's minus the tumours'."""
    if r.liver is not None or r.lesions is not None or r.lung is not None:
        raise InputError("--liver", "masks need --spect")
    tumours = tuple(r.tumour_volumes_ml)
    if r.normal_volume_ml is not None and r.liver_volume_ml is not None:
        raise InputError("--normal-ml", "give --liver-ml or --normal-ml, not both")
    if r.normal_volume_ml is None and r.liver_volume_ml is None:
        raise InputError("--liver-ml", "give the liver volume (--liver-ml or --normal-ml) or --spect with masks")
    if any(v <= 0 for v in tumours):
        raise InputError("--tumour-ml", "tumour volumes must be positive")
    normal = r.normal_volume_ml if r.normal_volume_ml is not None else r.liver_volume_ml - sum(tumours)
    if normal <= 0:
        raise InputError("--liver-ml" if r.normal_volume_ml is None else "--normal-ml",
                         f"normal-liver volume {normal:g} ml is not positive")
    names = tuple(f"tumour_{i + 1}" for i in range(len(tumours)))
    return _Volumes(float(normal), tumours, tuple(r.tn_ratios), names)


def _measured_volumes(r: PrescriptionRequest) -> _Volumes:
    """Volumes, T/N ratios and the LSF measured on the SPECT in its masks; InputError naming the file at fault."""
    from sirtjax.dosimetry.masks import DoseInputError
    from sirtjax.io import read_volume

    if any(v is not None for v in (r.liver_volume_ml, r.normal_volume_ml, r.tumour_volumes_ml or None,
                                   r.tn_ratios or None)):
        raise InputError("--spect", "give volumes and T/N ratios either as numbers or from --spect, not both")
    if r.liver is None:
        raise InputError("--spect", "needs --liver")
    paths = {"spect": r.spect, "liver": r.liver, "lesions": r.lesions, "lungs": r.lung}
    vols = {name: None if path is None else read_volume(path) for name, path in paths.items()}
    try:
        m = measure_compartments(vols["spect"], vols["liver"], lesions=vols["lesions"], lungs=vols["lungs"])
    except DoseInputError as exc:
        raise InputError(paths[exc.input_name], str(exc)) from None
    return _Volumes(m.normal_volume_ml, tuple(m.tumour_volume_ml), tuple(m.tn_ratios), m.tumour_names, m)


def _required(value: float | None, option: str) -> float:
    """value; InputError naming the option when the method needs it and it is None."""
    if value is None:
        raise InputError(option, "is required for this method")
    return value


def _prescription(r: PrescriptionRequest, v: _Volumes, lsf: float) -> Prescription:
    """The prescription of the request's method; InputError naming the method when its formula refuses the inputs."""
    def kg(ml: float) -> float:
        return ml * r.density_g_ml * 1e-3

    common = {"lung_shunt_fraction": lsf, "lung_mass_kg": r.lung_mass_kg, "constants": r.constants}
    try:
        if r.method == "partition":
            if len(v.tn_ratios) != len(v.tumours_ml):
                raise InputError("--tn", f"{len(v.tn_ratios)} T/N ratios for {len(v.tumours_ml)} tumours")
            return partition(_required(r.dose_gy, "--dose-gy"), kg(v.normal_ml), [kg(t) for t in v.tumours_ml],
                             list(v.tn_ratios), tumour_names=list(v.names), **common)
        if r.method == "mono-compartment":
            return mono_compartment(_required(r.dose_gy, "--dose-gy"), kg(v.normal_ml + sum(v.tumours_ml)), **common)
        if r.method == "bsa":
            return bsa_method(_required(r.height_m, "--height-m"), _required(r.weight_kg, "--weight-kg"),
                              sum(v.tumours_ml), v.normal_ml, liver_density_g_ml=r.density_g_ml, **common)
    except ValueError as exc:
        raise InputError(f"--method {r.method}", str(exc)) from None
    raise InputError("--method", f"one of {', '.join(PRESCRIPTION_METHODS)}, got {r.method!r}")

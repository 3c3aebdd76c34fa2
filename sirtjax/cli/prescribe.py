"""``sirtjax prescribe``: 90Y activity by the partition, mono-compartment or BSA method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import ConstantSet, Method, app


@app.command()
def prescribe(
    method: Annotated[Method, typer.Option("--method", help="partition (T/N), mono-compartment (MIRD) or bsa (resin).")] = Method.partition,
    dose_gy: Annotated[float | None, typer.Option("--dose-gy", help="partition: normal-liver dose; mono-compartment: target mean dose (Gy).")] = None,
    liver_ml: Annotated[float | None, typer.Option("--liver-ml", help="Whole (treated) liver volume incl. tumours (ml).")] = None,
    normal_ml: Annotated[float | None, typer.Option("--normal-ml", help="Normal-liver volume (ml); default liver minus tumours.")] = None,
    tumour_ml: Annotated[list[float] | None, typer.Option("--tumour-ml", help="A tumour volume (ml); repeat per tumour.")] = None,
    tn: Annotated[list[float] | None, typer.Option("--tn", help="A tumour-to-normal ratio; repeat, one per --tumour-ml.")] = None,
    spect: Annotated[Path | None, typer.Option("--spect", help="MAA SPECT counts: volumes, T/N and LSF from masks instead of numbers.")] = None,
    liver: Annotated[Path | None, typer.Option("--liver", help="Liver mask (with --spect).")] = None,
    lesions: Annotated[Path | None, typer.Option("--lesions", help="Lesion label map (with --spect), one tumour per instance.")] = None,
    lung: Annotated[Path | None, typer.Option("--lung", help="Lung mask (with --spect): LSF from counts.")] = None,
    lsf: Annotated[float | None, typer.Option("--lsf", help="Lung shunt fraction in [0, 1).")] = None,
    lung_counts: Annotated[float | None, typer.Option("--lung-counts", help="Lung counts (planar: geometric mean) for the LSF.")] = None,
    liver_counts: Annotated[float | None, typer.Option("--liver-counts", help="Liver counts for the LSF.")] = None,
    lung_mass_kg: Annotated[float, typer.Option("--lung-mass-kg", help="Lung mass for the lung dose (kg).")] = 1.0,
    density: Annotated[float, typer.Option("--density", help="Liver and tumour density (g/ml).")] = 1.03,
    height_m: Annotated[float | None, typer.Option("--height-m", help="Patient height (m), BSA method.")] = None,
    weight_kg: Annotated[float | None, typer.Option("--weight-kg", help="Patient weight (kg), BSA method.")] = None,
    constants: Annotated[ConstantSet, typer.Option("--constants", help="Named 90Y constant set (reported).")] = ConstantSet.icrp107,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
) -> None:
    """Administered activity (GBq), compartment and lung doses, and warnings (lung > 30 Gy, LSF > 20 %).

    Volumes, tumour-to-normal ratios and the lung shunt come from numbers, or from --spect with
    --liver [--lesions] [--lung] masks (resampled onto the SPECT grid).
    """
    import json

    from rich.console import Console

    from sirtjax.dosimetry import prescription as rx
    from sirtjax.errors import InputError

    positive = [("--dose-gy", dose_gy), ("--liver-ml", liver_ml), ("--normal-ml", normal_ml),
                ("--lung-mass-kg", lung_mass_kg), ("--density", density), ("--height-m", height_m),
                ("--weight-kg", weight_kg), *(("--tumour-ml", v) for v in tumour_ml or []), *(("--tn", v) for v in tn or [])]
    for option, value in positive:
        if value is not None and not value > 0:
            raise InputError(option, f"must be positive, got {value:g}")
    if height_m is not None and weight_kg is not None and (problem := rx.body_size_problem(height_m, weight_kg)) is not None:
        raise InputError(f"--{problem[0]}-{'m' if problem[0] == 'height' else 'kg'}", problem[1])
    for option, value in (("--lung-counts", lung_counts), ("--liver-counts", liver_counts)):
        if value is not None and not value >= 0:
            raise InputError(option, f"must be non-negative, got {value:g}")
    measured = None
    if spect is not None:
        if any(v is not None for v in (liver_ml, normal_ml, tumour_ml or None, tn or None)):
            raise InputError("--spect", "give volumes and T/N ratios either as numbers or from --spect, not both")
        if liver is None:
            raise InputError("--spect", "needs --liver")
        measured = _measure(spect, liver, lesions, lung)
        normal, tumours, ratios = measured.normal_volume_ml, list(measured.tumour_volume_ml), list(measured.tn_ratios)
        names = list(measured.tumour_names)
    else:
        if liver is not None or lesions is not None or lung is not None:
            raise InputError("--liver", "masks need --spect")
        tumours, ratios = list(tumour_ml or []), list(tn or [])
        normal = _normal_volume(liver_ml, normal_ml, tumours)
        names = [f"tumour_{i + 1}" for i in range(len(tumours))]
    lung_shunt = _lung_shunt(lsf, lung_counts, liver_counts, measured)
    shunt, shunt_source = lung_shunt.fraction, lung_shunt.source

    try:
        if method is Method.partition:
            if len(ratios) != len(tumours):
                raise InputError("--tn", f"{len(ratios)} T/N ratios for {len(tumours)} tumours")
            plan = rx.partition(_required(dose_gy, "--dose-gy"), normal * density * 1e-3,
                                [v * density * 1e-3 for v in tumours], ratios, lung_shunt_fraction=shunt,
                                lung_mass_kg=lung_mass_kg, constants=constants.value, tumour_names=names)
        elif method is Method.mono:
            plan = rx.mono_compartment(_required(dose_gy, "--dose-gy"), (normal + sum(tumours)) * density * 1e-3,
                                       lung_shunt_fraction=shunt, lung_mass_kg=lung_mass_kg, constants=constants.value)
        else:
            plan = rx.bsa_method(_required(height_m, "--height-m"), _required(weight_kg, "--weight-kg"), sum(tumours),
                                 normal, lung_shunt_fraction=shunt, lung_mass_kg=lung_mass_kg,
                                 liver_density_g_ml=density, constants=constants.value)
    except ValueError as exc:
        raise InputError(f"--method {method.value}", str(exc)) from None

    report = plan.to_dict()
    report["warnings"] += [w.to_dict() for w in lung_shunt.warnings]
    report["inputs"] = {"normal_volume_ml": normal, "tumour_volumes_ml": [float(v) for v in tumours],
                        "tn_ratios": [float(r) for r in ratios], "density_g_ml": density, "lsf_source": shunt_source,
                        "measured": None if measured is None else measured.to_dict()}
    if as_json:
        typer.echo(json.dumps(report, indent=2, allow_nan=False))
    else:
        _print(report, Console())


def _required(value: float | None, option: str) -> float:
    from sirtjax.errors import InputError

    if value is None:
        raise InputError(option, "is required for this method")
    return value


def _normal_volume(liver_ml: float | None, normal_ml: float | None, tumours: list[float]) -> float:
    """Normal-liver volume from --normal-ml, or --liver-ml minus the tumours; InputError when impossible."""
    from sirtjax.errors import InputError

    if normal_ml is not None and liver_ml is not None:
        raise InputError("--normal-ml", "give --liver-ml or --normal-ml, not both")
    if normal_ml is None and liver_ml is None:
        raise InputError("--liver-ml", "give the liver volume (--liver-ml or --normal-ml) or --spect with masks")
    if any(v <= 0 for v in tumours):
        raise InputError("--tumour-ml", "tumour volumes must be positive")
    normal = normal_ml if normal_ml is not None else liver_ml - sum(tumours)
    if normal <= 0:
        raise InputError("--liver-ml" if normal_ml is None else "--normal-ml", f"normal-liver volume {normal:g} ml is not positive")
    return float(normal)


def _lung_shunt(lsf, lung_counts, liver_counts, measured):
    """The LSF (`sirtjax.dosimetry.activity.choose_lung_shunt`): --lsf, or --lung-counts/--liver-counts, else the
    SPECT lung mask, else 0."""
    from sirtjax.dosimetry.activity import choose_lung_shunt, lung_shunt_fraction
    from sirtjax.errors import InputError

    given, source = lsf, "given"
    if lsf is not None and (lung_counts is not None or liver_counts is not None):
        raise InputError("--lsf", "give --lsf or --lung-counts/--liver-counts, not both")
    if lsf is not None and not 0.0 <= lsf < 1.0:
        raise InputError("--lsf", f"must be in [0, 1), got {lsf}")
    if lung_counts is not None or liver_counts is not None:
        if lung_counts is None or liver_counts is None:
            raise InputError("--lung-counts", "needs both --lung-counts and --liver-counts")
        try:
            given, source = lung_shunt_fraction(lung_counts, liver_counts), "lung and liver counts"
        except ValueError as exc:
            raise InputError("--lung-counts", str(exc)) from None
    return choose_lung_shunt(given, source, None if measured is None else measured.lung_shunt_fraction)


def _measure(spect: Path, liver: Path, lesions: Path | None, lung: Path | None):
    from sirtjax.dosimetry.compartments import measure_compartments
    from sirtjax.dosimetry.masks import DoseInputError
    from sirtjax.errors import InputError
    from sirtjax.io import read_volume

    vols = {"spect": read_volume(spect), "liver": read_volume(liver),
            "lesions": read_volume(lesions) if lesions else None, "lung": read_volume(lung) if lung else None}
    try:
        return measure_compartments(vols["spect"], vols["liver"], lesions=vols["lesions"], lungs=vols["lung"])
    except DoseInputError as exc:
        paths = {"spect": spect, "liver": liver, "lesions": lesions, "lungs": lung}
        raise InputError(paths[exc.input_name], str(exc)) from None


def _print(report: dict, console) -> None:
    from rich.table import Table

    c = report["constants"]
    table = Table(title=f"{report['method']}: {report['activity_gbq']:.3f} GBq administered "
                        f"(constants {c['name']}, {c['gy_kg_per_gbq']:.2f} Gy kg/GBq)")
    for col in ("compartment", "mass kg", "T/N", "uptake %", "activity GBq", "mean dose Gy"):
        table.add_column(col, justify="left" if col == "compartment" else "right", no_wrap=col == "compartment")
    for comp in report["compartments"]:
        tn = "" if comp["tn_ratio"] is None else f"{comp['tn_ratio']:.2f}"
        table.add_row(comp["name"], f"{comp['mass_kg']:.3f}", tn, f"{100 * comp['fractional_uptake']:.1f}",
                      f"{comp['activity_gbq']:.3f}", f"{comp['dose_gy']:.1f}")
    console.print(table)
    console.print(f"lung shunt {100 * report['lung_shunt_fraction']:.1f} % ({report['inputs']['lsf_source']}); "
                  f"lung dose {report['lung_dose_gy']:.2f} Gy for {report['lung_mass_kg']:g} kg of lung")
    for key, value in report["details"].items():
        console.print(f"{key}: {value:.4g}")
    for w in report["warnings"]:
        typer.echo(f"warning: {w['message']}", err=True)

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

    Volumes, T/N ratios and the lung shunt come from numbers, or from --spect with --liver [--lesions] [--lung] masks.
    """
    import json

    from sirtjax.pipelines.prescribe import PrescriptionRequest, prescribe_activity

    result = prescribe_activity(PrescriptionRequest(
        method=method.value, dose_gy=dose_gy, liver_volume_ml=liver_ml, normal_volume_ml=normal_ml,
        tumour_volumes_ml=tuple(tumour_ml or ()), tn_ratios=tuple(tn or ()), spect=spect, liver=liver, lesions=lesions,
        lung=lung, lung_shunt_fraction=lsf, lung_counts=lung_counts, liver_counts=liver_counts,
        lung_mass_kg=lung_mass_kg, density_g_ml=density, height_m=height_m, weight_kg=weight_kg,
        constants=constants.value))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        _print(result)


def _print(result) -> None:
    """The prescription as a table on stdout, the lung shunt and details under it, its warnings on stderr."""
    from rich.console import Console
    from rich.table import Table

    p, console = result.prescription, Console()
    table = Table(title=f"{p.method}: {p.activity_gbq:.3f} GBq administered "
                        f"(constants {p.constants.name}, {p.constants.gy_kg_per_gbq:.2f} Gy kg/GBq)")
    for col in ("compartment", "mass kg", "T/N", "uptake %", "activity GBq", "mean dose Gy"):
        table.add_column(col, justify="left" if col == "compartment" else "right", no_wrap=col == "compartment")
    for c in p.compartments:
        tn = "" if c.tn_ratio is None else f"{c.tn_ratio:.2f}"
        table.add_row(c.name, f"{c.mass_kg:.3f}", tn, f"{100 * c.fractional_uptake:.1f}", f"{c.activity_gbq:.3f}",
                      f"{c.dose_gy:.1f}")
    console.print(table)
    console.print(f"lung shunt {100 * p.lung_shunt_fraction:.1f} % ({result.lung_shunt.source}); "
                  f"lung dose {p.lung_dose_gy:.2f} Gy for {p.lung_mass_kg:g} kg of lung")
    for key, value in p.details.items():
        console.print(f"{key}: {value:.4g}")
    for w in result.warnings:
        typer.echo(f"warning: {w.message}", err=True)
